"""The small runtime: load an artifact and run it with TVM's runtime library only.

``edgecompile.runtime.load(path)`` verifies the manifest and every file's SHA-256, checks that
this machine can run the code, and returns a :class:`CompiledModel`. Nothing here imports the
compiler side (frontends, passes, lowering, torch, onnx, ``tvm.relax``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgecompile.runtime.model import BenchmarkResult, CompiledModel, set_threads
from edgecompile.runtime.signature import read_public_key

__all__ = ["BenchmarkResult", "CompiledModel", "load", "set_threads"]


def load(path: str | Path, trusted_keys: Sequence[str | Path | bytes] | None = None) -> CompiledModel:
    """Load a compiled artifact directory.

    With ``trusted_keys`` (Ed25519 public keys: PEM files as ``edgecompile keygen`` writes, or raw
    32-byte keys) the artifact must be signed by one of them (:mod:`edgecompile.runtime.signature`),
    checked before any file of it is opened; an empty list refuses every artifact."""
    keys = None if trusted_keys is None else [read_public_key(k) for k in trusted_keys]
    return CompiledModel(path, keys)
