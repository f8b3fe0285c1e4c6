"""The small runtime: load an artifact and run it with TVM's runtime library only.

``edgecompile.runtime.load(path)`` verifies the manifest and every file's SHA-256, checks that
this machine can run the code, and returns a :class:`CompiledModel`. Nothing here imports the
compiler side (frontends, passes, lowering, torch, onnx, ``tvm.relax``).
"""

from __future__ import annotations

from pathlib import Path

from edgecompile.runtime.model import BenchmarkResult, CompiledModel, set_threads

__all__ = ["BenchmarkResult", "CompiledModel", "load", "set_threads"]


def load(path: str | Path) -> CompiledModel:
    """Load a compiled artifact directory."""
    return CompiledModel(path)
