"""The package version, in a module of its own so that the package root, the API, the manifest
writer and the runtime bundle read it without importing each other."""

__version__ = "0.1.0"
