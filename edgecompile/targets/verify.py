"""What this machine can verify of each target: run its artifacts, or only build them (and why).

Levels, best first: ``runs`` (the artifact executes here: same CPU architecture with the profile's
CPU features, or a GPU of the kind with its driver); ``runs (emulated)`` (an aarch64 artifact runs
under qemu-user with an aarch64 sysroot -- outputs can be compared, timings are not device
latency); ``builds`` (the library is compiled and linked here); ``builds objects`` (compiled, but
the target's linker is not installed); ``needs ...`` (something the build itself needs is missing).
Nothing here imports TVM: ``edgecompile targets`` stays instant.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from edgecompile.runtime.hostinfo import cpu_flags, host_arch
from edgecompile.targets import TargetProfile

QEMU = {"aarch64": "qemu-aarch64", "arm": "qemu-arm"}


def emulation_sysroot(arch: str) -> Path | None:
    """An aarch64 sysroot with Python and TVM for qemu-user, if present: ``EDGECOMPILE_AARCH64_SYSROOT``
    when set, else the one ``scripts/aarch64_sysroot.sh`` builds under the checkout's ``.cache/``."""
    if arch != "aarch64":
        return None
    env = os.environ.get("EDGECOMPILE_AARCH64_SYSROOT")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / ".cache" / "aarch64-sysroot"
    return path if (path / "usr" / "bin").is_dir() else None


def verification(profile: TargetProfile) -> str:
    """One phrase: what this machine verifies of ``profile`` (see the module docstring)."""
    kind = profile.tvm.get("kind")
    if profile.runtime == "coreml":
        if importlib.util.find_spec("coremltools") is None:
            return "needs coremltools (pip install 'edgecompile[coreml]')"
        return "builds .mlpackage (predictions need macOS)"
    if kind == "cuda":
        if shutil.which("nvcc") is None and not os.environ.get("CUDA_HOME"):
            return "needs nvcc (CUDA toolkit) to build"
        if shutil.which("nvidia-smi") and _has_libcuda():
            return "runs (NVIDIA GPU here)"
        return "builds (fatbin; no GPU here)"
    if kind == "opencl":
        linker = profile.find_linker() if profile.arch != "host" else None
        return "builds (OpenCL source; no device here)" if linker != "" else "builds objects (no cross linker)"
    arch = host_arch() if profile.arch == "host" else profile.arch
    if arch == host_arch():
        missing = sorted(set(profile.cpu_features) - cpu_flags())
        return f"builds (this CPU lacks {', '.join(missing)})" if missing else "runs"
    if profile.find_linker() == "":
        return "builds objects (no cross linker)"
    qemu = QEMU.get(arch)
    if qemu and shutil.which(qemu) and emulation_sysroot(arch) is not None:
        return "runs (emulated, qemu)"
    return "builds"


def _has_libcuda() -> bool:
    import ctypes.util

    return ctypes.util.find_library("cuda") is not None
