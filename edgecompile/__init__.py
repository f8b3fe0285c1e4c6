"""edgecompile: an integer-first deployment compiler for transformer models.

``edgecompile.compile(model, target=...)`` builds an artifact; ``edgecompile.runtime.load(path)``
runs it with TVM's runtime library only. Importing this package is cheap: TVM, onnx and torch
are imported only by the functions that need them.
"""

from __future__ import annotations

import importlib

from edgecompile.version import __version__

__all__ = ["__version__", "compile", "load", "runtime"]


def compile(model, target: str = "native", output=None, **kwargs):  # noqa: A001
    """Compile a model to an artifact directory; see :func:`edgecompile.api.compile`."""
    from edgecompile.api import compile as _compile

    return _compile(model, target, output, **kwargs)


def load(path, trusted_keys=None):
    """Load an artifact for inference; see :func:`edgecompile.runtime.load` (``trusted_keys``: public
    keys one of which must have signed it)."""
    from edgecompile.runtime import load as _load

    return _load(path, trusted_keys)


def __getattr__(name: str):
    if name in ("runtime", "api", "targets", "frontend", "errors"):
        return importlib.import_module(f"edgecompile.{name}")
    raise AttributeError(f"module 'edgecompile' has no attribute '{name}'")
