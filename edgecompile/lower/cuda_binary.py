"""Compile CUDA kernels to device code at build time, so artifacts need no compiler on the device.

TVM 0.27's compiler library (built without the CUDA runtime) always exports CUDA kernels as
*source* (format ``cuda``); ``libtvm_runtime_cuda`` compiles such a module at load by calling the
global ``tvm_callback_cuda_compile(source) -> bytes``, which only TVM's compiler-side Python
registers. So at build time we compile each CUDA module's source with ``nvcc --fatbin`` for the
profile's architecture (SASS for ``sm_XX`` plus its PTX, so newer GPUs can JIT it) into a file of
the artifact, keyed by the source's SHA-256; the small runtime registers a callback that returns
the prebuilt fatbin for a matching source and refuses any other
(:mod:`edgecompile.runtime.device_code`). nvcc needs neither a GPU nor a driver, unlike NVRTC.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from edgecompile.errors import BuildError

# The first bytes of a CUDA fatbin file (its header magic, little endian 0xBA55ED50).
FATBIN_MAGIC = bytes.fromhex("50ed55ba")


def find_nvcc() -> str:
    """The nvcc executable (``$CUDA_HOME/bin/nvcc`` or PATH), or a BuildError saying what to install."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [str(Path(home) / "bin" / "nvcc")] if home else []
    candidates.append(shutil.which("nvcc") or "")
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise BuildError(
        "CUDA targets compile their kernels to device code at build time and need nvcc: install the CUDA "
        "toolkit (or `pip install nvidia-cuda-nvcc nvidia-cuda-crt nvidia-cuda-cccl`) and put nvcc on PATH "
        "or set CUDA_HOME"
    )


def nvcc_fatbin(code: str, arch: str, nvcc: str | None = None) -> bytes:
    """``code`` compiled by nvcc into a fatbin with SASS for ``arch`` (e.g. ``sm_90``) and its PTX."""
    nvcc = nvcc or find_nvcc()
    if not arch.startswith("sm_"):
        raise BuildError(f"CUDA arch must look like sm_90, got '{arch}'")
    num = arch[3:]
    with tempfile.TemporaryDirectory(prefix="edgecompile-cuda-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.fatbin"
        src.write_text(code)
        cmd = [
            nvcc,
            "--fatbin",
            "-O3",
            "--use_fast_math",
            "--expt-relaxed-constexpr",
            "-gencode",
            f"arch=compute_{num},code=sm_{num}",
            "-gencode",
            f"arch=compute_{num},code=compute_{num}",
            "-o",
            str(out),
            str(src),
        ]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            tail = "\n".join(run.stderr.strip().splitlines()[-5:])
            raise BuildError(f"nvcc failed to compile the CUDA kernels for {arch}:\n{tail}")
        return out.read_bytes()


def write_device_code(executable, arch: str, out_dir: Path) -> list[dict]:
    """Compile the executable's CUDA kernels into ``kernels-<i>.<arch>.fatbin`` files in ``out_dir``;
    returns the manifest entries ``{file, arch, source_sha256}`` the runtime matches them by."""
    nvcc = find_nvcc()
    entries = []
    for i, code in enumerate(device_sources(executable, "cuda")):
        path = out_dir / f"kernels-{i}.{arch}.fatbin"
        path.write_bytes(nvcc_fatbin(code, arch, nvcc))
        entries.append({"file": path.name, "arch": arch, "source_sha256": hashlib.sha256(code.encode()).hexdigest()})
    return entries


def device_sources(executable, kind: str) -> list[str]:
    """The source of every ``kind`` module (``cuda``, ``opencl``) the built executable imports."""
    found: list[str] = []

    def walk(module) -> None:
        for sub in module.imports:
            if sub.kind == kind:
                found.append(sub.inspect_source())
            walk(sub)

    walk(executable.mod)
    return found
