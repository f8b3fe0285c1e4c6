"""TVM's runtime library through ``tvm_ffi`` alone, without importing the ``tvm`` Python package.

The ``tvm`` package, even in runtime-only mode, imports some 300 Python modules (its script
printer, IR classes) that a deployed model never uses: ~40 MB of resident memory and ~0.3 s per
process (measured on x86-64, Python 3.11). What running an artifact needs is what the native
runner ``run_model`` uses: ``libtvm_runtime.so`` loaded globally (its module loaders and VM),
``vm_load_executable`` / ``vm_initialization`` on the model library, a few ``runtime.*`` global
functions, and DLPack for tensors. This module is that, for Python. When the process has imported
``tvm`` anyway (the compiler, tests), the same library file is already loaded and this shares it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

from edgecompile.errors import ArtifactError

POOLED_ALLOCATOR = 2
ALIGNMENT = 64  # TVM refuses (and its kernels assume) less aligned tensor data
_LOADED: dict[str, object] = {}


class _HideModules(importlib.abc.MetaPathFinder):
    """Make ``import NAME`` fail for the given top-level names while installed."""

    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is hidden while the TVM runtime loads", name=fullname)
        return None


def tvm_lib_dir() -> Path:
    """The folder of TVM's shared libraries (``tvm/lib`` of the installed or bundled package)."""
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError("TVM's runtime is not installed (pip install apache-tvm, or use a device bundle)")
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


def ffi():
    """``tvm_ffi`` with ``libtvm_runtime.so`` loaded (once). ``tvm_ffi`` imports torch when it can
    (for DLPack interop we do not use), which costs seconds and hundreds of MB: it is hidden."""
    if "tvm_ffi" not in sys.modules:
        os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")
        hide = _HideModules({"torch"} - set(sys.modules))
        sys.meta_path.insert(0, hide)
        try:
            import tvm_ffi  # noqa: F401
        finally:
            sys.meta_path.remove(hide)
    import tvm_ffi
    from tvm_ffi.libinfo import load_lib_ctypes

    if "tvm_runtime" not in _LOADED:
        _LOADED["tvm_runtime"] = load_lib_ctypes("tvm", "tvm_runtime", "RTLD_GLOBAL", [tvm_lib_dir()])
    return tvm_ffi


def load_sidecar(name: str) -> None:
    """Load another TVM runtime library (``tvm_runtime_cuda``) from beside ``libtvm_runtime.so``."""
    from tvm_ffi.libinfo import load_lib_ctypes

    ffi()
    if name not in _LOADED:
        _LOADED[name] = load_lib_ctypes("tvm", name, "RTLD_LOCAL", [tvm_lib_dir()])


def global_func(name: str):
    return ffi().get_global_func(name)


def device(kind: str):
    """The first device of ``kind`` (``cpu``, ``cuda``, ``opencl``), or ArtifactError if absent."""
    dev = ffi().device(kind, 0)
    if kind != "cpu" and not global_func("runtime.GetDeviceAttr")(dev.dlpack_device_type(), 0, 0):
        raise ArtifactError(f"artifact needs a {kind} device and none is available here")
    return dev


def make_vm(lib, dev):
    """A new Relax VM of the loaded model library ``lib`` on ``dev`` (the host CPU runs shape code)."""
    tvm_ffi = ffi()
    vm = lib["vm_load_executable"]()
    cpu = tvm_ffi.device("cpu", 0)
    args = [dev.dlpack_device_type(), dev.index, POOLED_ALLOCATOR]
    if dev.dlpack_device_type() != cpu.dlpack_device_type():
        args += [cpu.dlpack_device_type(), 0, POOLED_ALLOCATOR]
    vm["vm_initialization"](*args)
    return vm


def aligned_copy(arr: np.ndarray) -> np.ndarray:
    """``arr`` copied into fresh memory aligned to :data:`ALIGNMENT` bytes."""
    buf = np.empty(arr.nbytes + ALIGNMENT, np.uint8)
    start = -buf.ctypes.data % ALIGNMENT
    out = buf[start : start + arr.nbytes].view(arr.dtype).reshape(arr.shape)
    out[...] = arr
    return out


def view(arr: np.ndarray):
    """A TVM tensor over ``arr``'s memory (C-contiguous, 64-byte aligned), no copy."""
    return ffi().from_dlpack(arr)


def to_device(arr: np.ndarray, dev):
    """A TVM tensor holding a copy of ``arr`` on ``dev``."""
    host = view(aligned_copy(np.ascontiguousarray(arr)))
    if dev.dlpack_device_type() == ffi().device("cpu", 0).dlpack_device_type():
        return host
    out = global_func("runtime.TVMTensorAllocWithScope")(host.shape, host.dtype, dev, None)
    global_func("runtime.TVMTensorCopyFromTo")(host, out)
    return out


def to_numpy(tensor) -> np.ndarray:
    """A numpy copy of a TVM tensor (from any device)."""
    tvm_ffi = ffi()
    cpu = tvm_ffi.device("cpu", 0)
    if tensor.device.dlpack_device_type() != cpu.dlpack_device_type():
        host = global_func("runtime.TVMTensorAllocWithScope")(tensor.shape, tensor.dtype, cpu, None)
        global_func("runtime.TVMTensorCopyFromTo")(tensor, host)
        tensor = host
    return np.from_dlpack(tensor).copy()


def sync(dev) -> None:
    global_func("runtime.Device_StreamSync")(dev, 0)
