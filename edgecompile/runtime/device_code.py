"""CUDA artifacts in runtime-only mode: the CUDA sidecar and the prebuilt device code.

TVM's runtime-only mode loads ``libtvm_runtime.so`` alone; the CUDA device API and module loader
live in the sidecar ``libtvm_runtime_cuda.so`` beside it, which we load here. CUDA kernels come out
of TVM 0.27 as source, which the sidecar compiles at load through the global
``tvm_callback_cuda_compile``; we register that callback to hand back the fatbin the compiler
built for exactly that source (matched by SHA-256, see ``lower/cuda_binary.py``), so no compiler,
NVRTC or Python compiler package is needed on the device.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgecompile.errors import ArtifactError

CALLBACK = "tvm_callback_cuda_compile"


def load_cuda_sidecar() -> None:
    """Load ``libtvm_runtime_cuda.so`` from TVM's library directory (once)."""
    from edgecompile.runtime.tvm_ffi_runtime import load_sidecar, tvm_lib_dir

    try:  # as TVM's own CUDA backend loads it, which runtime-only mode skips
        load_sidecar("tvm_runtime_cuda")
    except (OSError, RuntimeError) as e:
        raise ArtifactError(
            f"cannot load TVM's CUDA runtime (libtvm_runtime_cuda.so beside {tvm_lib_dir()}): {e}; a CUDA artifact "
            "needs an NVIDIA GPU with its driver (libcuda.so.1) and the CUDA runtime (libcudart.so.13) on the "
            "library path"
        ) from e


_PREBUILT: dict[str, Path] = {}  # source SHA-256 -> fatbin file, over every artifact loaded


def register_device_code(artifact: Path, entries: list[dict]) -> None:
    """Serve the artifact's prebuilt fatbins to the CUDA module loader, matched by source hash."""
    import tvm_ffi

    _PREBUILT.update({e["source_sha256"]: artifact / e["file"] for e in entries})
    tvm_ffi.register_global_func(CALLBACK, _prebuilt, override=True)


def _prebuilt(code: str) -> bytes:
    digest = hashlib.sha256(code.encode()).hexdigest()
    if digest not in _PREBUILT:
        raise ArtifactError(
            "the CUDA kernels in the library match none of the prebuilt device code of the artifacts loaded: "
            "recompile the artifact"
        )
    return _PREBUILT[digest].read_bytes()
