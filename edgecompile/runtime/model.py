"""Load and run a compiled artifact with TVM's runtime library only.

Imports ``tvm.runtime`` and numpy, nothing from the compiler side: on a device, set
``TVM_USE_RUNTIME_LIB=1`` (the ``edgecompile run`` and ``bench`` commands do) and only
``libtvm_runtime.so`` is loaded.
"""

from __future__ import annotations

import importlib.abc
import os
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgecompile.errors import ArtifactError, InputMismatchError
from edgecompile.runtime.device_code import load_cuda_sidecar, register_device_code
from edgecompile.runtime.hostinfo import cpu_flags, host_arch
from edgecompile.runtime.manifest import read_verified


@dataclass(frozen=True)
class BenchmarkResult:
    """Latency over ``runs`` timed calls after ``warmup`` untimed ones, in milliseconds."""

    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    runs: int
    warmup: int
    threads: int

    def to_json(self) -> dict:
        return asdict(self)


class CompiledModel:
    """An artifact loaded for inference: ``run(feeds) -> {name: array}``, ``benchmark()``."""

    def __init__(self, path: str | Path, trusted_keys: list[bytes] | None = None):
        self.path = Path(path)
        self.manifest = read_verified(self.path, trusted_keys)
        self.inputs: list[dict] = self.manifest["inputs"]
        self.outputs: list[dict] = self.manifest["outputs"]
        self._check_machine()
        # TVM sizes its pool to half the logical CPUs on x86 (assuming hyper-threading); we default
        # to every CPU this process may run on, and --threads narrows it.
        os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))
        tvm = import_tvm_runtime()
        self._tvm = tvm
        lib_file = self.path / self.manifest["library"]
        if self.manifest["target"].get("device") == "cuda":
            load_cuda_sidecar(tvm)
            register_device_code(self.path, self.manifest.get("device_code") or [])
        lib = _load_library(tvm, lib_file, self.manifest["files"].get(self.manifest["library"], ""))
        self.device = self._device()
        self._vm = tvm.runtime.vm.VirtualMachine(lib, self.device)
        self._main = self._vm["main"]

    def _check_machine(self) -> None:
        target = self.manifest["target"]
        lib = self.manifest["library"]
        if target.get("runtime") == "coreml":
            raise ArtifactError(
                f"{self.path} is a Core ML package ({lib}) for {target['name']}: it runs with Core ML on Apple "
                "devices, not with edgecompile's TVM runtime (on macOS: "
                f"coremltools.models.MLModel('{self.path / lib}'))"
            )
        if not lib.endswith(".so"):
            raise ArtifactError(
                f"this artifact holds unlinked objects ({lib}) for {target['name']}; link them on a "
                f"machine with the toolchain: {self.manifest.get('link_command', '')}, or recompile "
                "with the cross compiler installed"
            )
        here = host_arch()
        if target["arch"] != here:
            raise ArtifactError(
                f"artifact was compiled for {target['arch']} ({target['name']}), this machine is {here}"
            )
        flags = cpu_flags()
        missing = sorted(set(target.get("cpu_features", [])) - flags)
        if missing and flags:
            raise ArtifactError(
                f"artifact for target {target['name']} needs CPU features this machine lacks: "
                f"{', '.join(missing)}; recompile with --target native"
            )

    def _device(self):
        kind = self.manifest["target"].get("device", "cpu")
        tvm = self._tvm
        dev = {"cpu": tvm.cpu, "cuda": tvm.cuda, "opencl": tvm.opencl}[kind](0)
        if kind != "cpu" and not dev.exist:
            raise ArtifactError(f"artifact needs a {kind} device and none is available here")
        return dev

    def _check_feeds(self, feeds: Mapping[str, object]) -> list[np.ndarray]:
        expected = {i["name"]: i for i in self.inputs}
        listing = ", ".join(f"{i['name']}[{'x'.join(map(str, i['shape']))} {i['dtype']}]" for i in self.inputs)
        unknown = sorted(set(feeds) - set(expected))
        if unknown:
            raise InputMismatchError(f"unknown input '{unknown[0]}'; the model's inputs are {listing}")
        args = []
        for name, spec in expected.items():
            if name not in feeds:
                raise InputMismatchError(f"missing input '{name}'; the model's inputs are {listing}")
            arr = np.asarray(feeds[name])
            if arr.dtype != np.dtype(spec["dtype"]):
                raise InputMismatchError(
                    f"input '{name}' has dtype {arr.dtype}, the model expects {spec['dtype']} "
                    f"(convert with .astype('{spec['dtype']}'))"
                )
            if tuple(arr.shape) != tuple(spec["shape"]):
                raise InputMismatchError(
                    f"input '{name}' has shape {'x'.join(map(str, arr.shape))}, the model was compiled "
                    f"for {'x'.join(map(str, spec['shape']))}"
                )
            bounds = spec.get("valid_range")
            if bounds and arr.size and (arr.min() < bounds[0] or arr.max() > bounds[1]):
                bad = arr.max() if arr.max() > bounds[1] else arr.min()
                raise InputMismatchError(
                    f"input '{name}' holds {bad}, outside {bounds[0]}..{bounds[1]}: it indexes a table of "
                    f"{bounds[1] + 1} rows (e.g. token ids into the vocabulary)"
                )
            _check_finite(name, arr)
            args.append(np.ascontiguousarray(arr))
        return args

    def _call(self, tensors: list) -> list[np.ndarray]:
        out = self._main(*tensors)
        flat = flatten_outputs(out)
        if len(flat) != len(self.outputs):
            raise ArtifactError(f"model returned {len(flat)} outputs, manifest lists {len(self.outputs)}")
        return flat

    def run(self, feeds: Mapping[str, object], threads: int | None = None) -> dict[str, np.ndarray]:
        """Run once; ``feeds`` maps every input name to an array of the compiled shape and dtype."""
        args = self._check_feeds(feeds)
        if threads:
            set_threads(threads)
        tensors = [self._tvm.runtime.tensor(a, self.device) for a in args]
        return {o["name"]: v for o, v in zip(self.outputs, self._call(tensors))}

    def example_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Inputs of the right shapes and dtypes: standard normal floats, ones for integers."""
        rng = np.random.default_rng(seed)
        feeds = {}
        for i in self.inputs:
            dt = np.dtype(i["dtype"])
            shape = tuple(i["shape"])
            feeds[i["name"]] = rng.standard_normal(shape).astype(dt) if dt.kind == "f" else np.ones(shape, dt)
        return feeds

    def benchmark(
        self,
        runs: int = 50,
        threads: int | None = None,
        warmup: int = 5,
        feeds: Mapping[str, object] | None = None,
    ) -> BenchmarkResult:
        """Time ``runs`` calls (inputs already on the device) and report median, p90 and min."""
        if runs < 1:
            raise InputMismatchError("--runs must be at least 1")
        args = self._check_feeds(feeds if feeds is not None else self.example_inputs())
        if threads:
            set_threads(threads)
        tensors = [self._tvm.runtime.tensor(a, self.device) for a in args]

        def call():
            self._main(*tensors)
            self.device.sync()

        times = sorted(time_calls(call, runs, warmup))
        used = num_threads()
        p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
        return BenchmarkResult(
            median_ms=statistics.median(times),
            p90_ms=p90,
            min_ms=times[0],
            mean_ms=statistics.fmean(times),
            runs=runs,
            warmup=warmup,
            threads=used,
        )


# Loaded libraries by SHA-256 (verified against the manifest just before): TVM never unloads a
# library, so loading the same artifact again would map it again (~0.6 MB a load); the same bytes
# are one module. A VM is still made per load, so models do not share state.
_LIBRARIES: dict[str, object] = {}


def _load_library(tvm, lib_file: Path, digest: str):
    if digest and digest in _LIBRARIES:
        return _LIBRARIES[digest]
    try:
        lib = tvm.runtime.load_module(str(lib_file))
    except Exception as e:
        raise ArtifactError(f"cannot load {lib_file}: {str(e).strip().splitlines()[-1]}") from e
    if digest:
        _LIBRARIES[digest] = lib
    return lib


def _check_finite(name: str, arr: np.ndarray) -> None:
    """The run-time NaN policy: float inputs holding NaN or +-Inf are refused, naming the first one.
    (An int8 recipe would quantize NaN to a finite value and return plausible numbers; a float
    recipe spreads it through a row. Neither is an answer, so neither is given.)"""
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise InputMismatchError(
            f"input '{name}' holds {arr[where]} at index {list(where)}: inputs must be finite (NaN and Inf are refused)"
        )


class _HideModules(importlib.abc.MetaPathFinder):
    """Make ``import NAME`` fail for the given top-level names while installed."""

    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is hidden while the TVM runtime loads", name=fullname)
        return None


def import_tvm_runtime():
    """Import ``tvm.runtime`` and its VM. When TVM is not loaded yet, it is loaded without torch:
    ``tvm_ffi`` imports torch opportunistically (for DLPack interop we do not use), which costs
    seconds and hundreds of MB on a device that happens to have it."""
    if "tvm" not in sys.modules:
        os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")
        hide = _HideModules({"torch"} - set(sys.modules))
        sys.meta_path.insert(0, hide)
        try:
            import tvm.runtime
        finally:
            sys.meta_path.remove(hide)
    import tvm
    import tvm.runtime.vm  # noqa: F401

    return tvm


def time_calls(call, runs: int, warmup: int = 3) -> list[float]:
    """Milliseconds of each of ``runs`` calls of ``call()``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def set_threads(n: int) -> int:
    """Size TVM's CPU thread pool to ``n`` workers; returns the count now in use."""
    import tvm

    if n < 1:
        raise InputMismatchError("--threads must be at least 1")
    tvm.get_global_func("runtime.config_threadpool")(1, n)
    return num_threads()


def num_threads() -> int:
    import tvm

    return int(tvm.get_global_func("runtime.NumThreads")())


def flatten_outputs(value) -> list[np.ndarray]:
    """The VM's return value (a tensor, a shape, or nested tuples of them) as a flat array list."""
    if hasattr(value, "numpy"):
        return [value.numpy()]
    items = list(value)
    if all(isinstance(v, int) for v in items):  # a ShapeTuple
        return [np.array(items, dtype=np.int64)]
    out = []
    for v in items:
        out.extend(flatten_outputs(v))
    return out
