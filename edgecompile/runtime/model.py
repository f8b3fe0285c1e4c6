"""Load and run a compiled artifact with TVM's runtime library only.

Loads ``libtvm_runtime.so`` through ``tvm_ffi`` (:mod:`edgecompile.runtime.tvm_ffi_runtime`) and
imports numpy, nothing from the compiler side and not even the ``tvm`` Python package.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgecompile.errors import ArtifactError, InputMismatchError
from edgecompile.runtime import tvm_ffi_runtime as rt
from edgecompile.runtime.buckets import build_shapes, describe_input, input_sizes, pad_to, pick_build, slice_outputs
from edgecompile.runtime.device_code import load_cuda_sidecar, register_device_code
from edgecompile.runtime.hostinfo import cpu_flags, host_arch
from edgecompile.runtime.manifest import read_verified
from edgecompile.runtime.memory import current_rss, peak_rss
from edgecompile.runtime.profile import Profile, profile_calls, record_calls
from edgecompile.runtime.weights import map_weights


@dataclass(frozen=True)
class BenchmarkResult:
    """Latency over ``runs`` timed calls after ``warmup`` untimed ones, in milliseconds; the memory
    beside it: this process's peak resident set after the runs, what loading the model added to the
    resident set, and the artifact's planned sizes (manifest ``memory``; None for older artifacts)."""

    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    runs: int
    warmup: int
    threads: int
    peak_rss_bytes: int | None = None
    load_rss_bytes: int | None = None
    load_ms: float | None = None
    weights_bytes: int | None = None
    arena_bytes: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


class CompiledModel:
    """An artifact loaded for inference: ``run(feeds) -> {name: array}``, ``benchmark()``."""

    def __init__(self, path: str | Path, trusted_keys: list[bytes] | None = None):
        rt.ffi()  # first: load time and memory are the model's, not the runtime library's
        rss_before, t0 = current_rss(), time.perf_counter()
        self.path = Path(path)
        self.manifest = read_verified(self.path, trusted_keys)
        self.inputs: list[dict] = self.manifest["inputs"]
        self.outputs: list[dict] = self.manifest["outputs"]
        self._check_machine()
        # TVM sizes its pool to half the logical CPUs on x86 (assuming hyper-threading); we default
        # to every CPU this process may run on, and --threads narrows it.
        os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))
        lib_file = self.path / self.manifest["library"]
        kind = self.manifest["target"].get("device", "cpu")
        if kind == "cuda":
            load_cuda_sidecar()
            register_device_code(self.path, self.manifest.get("device_code") or [])
        if kind not in ("cpu", "cuda", "opencl"):
            raise ArtifactError(f"artifact is for a {kind!r} device, which this runtime does not drive")
        self._on_cpu = kind == "cpu"
        digest = self.manifest["files"].get(self.manifest["library"], "")
        if self._on_cpu:  # a weights file that does not fit is refused before any dlopen
            self.device = rt.device(kind)
            self._weights = self._map_weights()
            lib = _load_library(lib_file, digest)
        else:  # the library first: loading it is what builds the device code (and what a test can see)
            lib = _load_library(lib_file, digest)
            self.device = rt.device(kind)
            self._weights = self._map_weights()
        self._lib = lib
        self._main = self._make_main(lib, lib_file)
        # a ranged artifact: several builds sharing the weights; the manifest's library is the largest
        self._ranged: dict | None = self.manifest.get("ranged")
        self._builds: dict[int, tuple] = {}  # build index -> (library, main), loaded on first use
        if self._ranged is not None:
            libs = [b["library"] for b in self._ranged["builds"]]
            top = libs.index(self.manifest["library"]) if self.manifest["library"] in libs else None
            if top is None:
                raise ArtifactError(f"{self.path}: the library is none of the ranged builds: the manifest was edited")
            self._builds[top] = (lib, self._main)
        self.load_ms = (time.perf_counter() - t0) * 1e3
        after = current_rss()
        self.load_rss_bytes = None if rss_before is None or after is None else after - rss_before

    def _make_main(self, lib, lib_file: Path):
        try:
            return rt.make_vm(lib, self.device)["main"]
        except Exception as e:
            raise ArtifactError(f"{lib_file} is not a model library: {str(e).strip().splitlines()[-1]}") from e

    def _build(self, index: int | None) -> tuple:
        """``(library, main, weights)`` of build ``index`` of a ranged artifact (None: the only one)."""
        if index is None:
            return self._lib, self._main, self._weights
        if index not in self._builds:
            name = self._ranged["builds"][index]["library"]
            lib = _load_library(self.path / name, self.manifest["files"].get(name, ""))
            self._builds[index] = (lib, self._make_main(lib, self.path / name))
        lib, main = self._builds[index]
        return lib, main, [self._weights[k] for k in self._ranged["builds"][index]["weights"]]

    def _prepare(self, feeds: Mapping[str, object]) -> tuple[list[np.ndarray], int | None, dict | None]:
        """The checked feeds as the arguments of the build that runs them: ``(arrays, build, sizes)``;
        for a ranged artifact, zero-padded into the smallest build that holds them."""
        args = self._check_feeds(feeds)
        if self._ranged is None:
            return args, None, None
        sizes = input_sizes(self._ranged, self.inputs, {i["name"]: a.shape for i, a in zip(self.inputs, args)})
        build = pick_build(self._ranged, sizes)
        shapes = build_shapes(self._ranged, self.inputs, build)
        return [pad_to(a, shapes[i["name"]]) for i, a in zip(self.inputs, args)], build, sizes

    def _map_weights(self) -> list:
        """The weights file as tensors ``main`` takes after the inputs: views of the mapping on the
        CPU (no copy; :mod:`edgecompile.runtime.weights`), one upload to a GPU."""
        section = self.manifest.get("weights")
        if section is None:  # artifacts that keep them in the library (OpenCL before session 40)
            return []
        views = map_weights(self.path, section)
        if self._on_cpu:
            return [rt.view(v) for v in views]
        return [rt.to_device(v, self.device) for v in views]

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

    def _check_feeds(self, feeds: Mapping[str, object]) -> list[np.ndarray]:
        expected = {i["name"]: i for i in self.inputs}
        ranged = self._ranged
        listing = ", ".join(
            describe_input(ranged, i) if ranged else f"{i['name']}[{'x'.join(map(str, i['shape']))} {i['dtype']}]"
            for i in self.inputs
        )
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
            if tuple(arr.shape) != tuple(spec["shape"]) and ranged is None:
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

    def _call(self, tensors: list, build: int | None = None) -> list[np.ndarray]:
        _, main, weights = self._build(build)
        out = main(*tensors, *weights)
        flat = flatten_outputs(out)
        if len(flat) != len(self.outputs):
            raise ArtifactError(f"model returned {len(flat)} outputs, manifest lists {len(self.outputs)}")
        return flat

    def run(self, feeds: Mapping[str, object], threads: int | None = None) -> dict[str, np.ndarray]:
        """Run once; ``feeds`` maps every input name to an array of the compiled shape (any shape in
        range, for a ranged artifact) and dtype."""
        args, build, sizes = self._prepare(feeds)
        if threads:
            set_threads(threads)
        tensors = [rt.to_device(a, self.device) for a in args]
        values = self._call(tensors, build)
        if self._ranged is not None:
            values = slice_outputs(self._ranged, self.outputs, values, sizes)
        return {o["name"]: v for o, v in zip(self.outputs, values)}

    def example_inputs(self, seed: int = 0, shapes: Mapping[str, tuple] | None = None) -> dict[str, np.ndarray]:
        """Inputs of the right shapes and dtypes: standard normal floats, ones for integers.
        ``shapes`` (a ranged artifact) picks sizes in range: ``{"input_ids": (1, 16)}`` sizes every
        input of the same group alike; groups not named take their largest size."""
        rng = np.random.default_rng(seed)
        feeds = {}
        wanted = self.shapes_for(shapes or {})
        for i in self.inputs:
            dt = np.dtype(i["dtype"])
            shape = wanted[i["name"]]
            feeds[i["name"]] = rng.standard_normal(shape).astype(dt) if dt.kind == "f" else np.ones(shape, dt)
        return feeds

    def shapes_for(self, given: Mapping[str, tuple]) -> dict[str, tuple[int, ...]]:
        """Every input's shape when ``given`` names some (checked against the ranges): the other
        inputs of a group take its size; groups not named take their largest."""
        unknown = sorted(set(given) - {i["name"] for i in self.inputs})
        if unknown:
            names = ", ".join(i["name"] for i in self.inputs)
            raise InputMismatchError(f"unknown input '{unknown[0]}'; the model's are {names}")
        if self._ranged is None:
            for i in self.inputs:
                if i["name"] in given and tuple(given[i["name"]]) != tuple(i["shape"]):
                    raise InputMismatchError(
                        f"input '{i['name']}' takes shape {'x'.join(map(str, i['shape']))} only: this artifact "
                        "was compiled for fixed shapes"
                    )
            return {i["name"]: tuple(i["shape"]) for i in self.inputs}
        specs = [i for i in self.inputs if i["name"] in given]
        sizes = input_sizes(self._ranged, specs, {k: tuple(v) for k, v in given.items()})
        top = {g: e["range"][1] for g, e in self._ranged["groups"].items()}
        shapes = {i["name"]: list(i["shape"]) for i in self.inputs}
        for d in self._ranged["dims"]:
            shapes[d["input"]][d["axis"]] = {**top, **sizes}[d["group"]]
        return {k: tuple(v) for k, v in shapes.items()}

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
        call, _, _ = self._timed_call(feeds, threads)
        times = sorted(time_calls(call, runs, warmup))
        used = num_threads()
        p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
        plan = self.manifest.get("memory") or {}
        return BenchmarkResult(
            median_ms=statistics.median(times),
            p90_ms=p90,
            min_ms=times[0],
            mean_ms=statistics.fmean(times),
            runs=runs,
            warmup=warmup,
            threads=used,
            peak_rss_bytes=peak_rss(),
            load_rss_bytes=self.load_rss_bytes,
            load_ms=self.load_ms,
            weights_bytes=plan.get("weights_bytes"),
            arena_bytes=plan.get("arena_bytes"),
        )

    def profile(
        self, repeats: int = 20, threads: int | None = None, feeds: Mapping[str, object] | None = None, runs: int = 10
    ) -> Profile:
        """Per-kernel times (:mod:`edgecompile.runtime.profile`): each kernel call of one run timed
        ``repeats`` times with the VM's own arguments; the whole run's median over ``runs``."""
        if repeats < 1 or runs < 1:
            raise InputMismatchError("--runs must be at least 1")
        call, args, build = self._timed_call(feeds, threads)
        run_ms = statistics.median(time_calls(call, runs, 3))
        vm = rt.make_vm(self._build(build)[0], self.device)  # its own VM: the instrument never touches ours
        calls = record_calls(vm, args)
        return profile_calls(calls, run_ms, self.manifest.get("kernels") or [], repeats, self._sync)

    def _timed_call(self, feeds, threads):
        """``(call, args, build)``: one synchronized run of ``main`` on ``feeds`` (example inputs by
        default) already on the device, the arguments it passes (inputs, then weights) and the build
        that runs them (None but for a ranged artifact)."""
        checked, build, _ = self._prepare(feeds if feeds is not None else self.example_inputs())
        if threads:
            set_threads(threads)
        _, main, weights = self._build(build)
        args = [*(rt.to_device(a, self.device) for a in checked), *weights]

        def call():
            main(*args)
            self._sync()

        return call, args, build

    def _sync(self) -> None:
        if not self._on_cpu:
            rt.sync(self.device)


# Loaded libraries by SHA-256 (verified against the manifest just before): TVM never unloads a
# library, so loading the same artifact again would map it again (~0.6 MB a load); the same bytes
# are one module. A VM is still made per load, so models do not share state.
_LIBRARIES: dict[str, object] = {}
# The digest of the library dlopen mapped from each path. dlopen returns the library already mapped
# under a name, not the file there now: an artifact compiled again into the same directory in one
# process ran its new weights through the old kernels (a crash on the argument count at best).
_MAPPED: dict[str, str] = {}


def _load_library(lib_file: Path, digest: str):
    if digest and digest in _LIBRARIES:
        return _LIBRARIES[digest]
    path = str(Path(lib_file).resolve())
    stale = path in _MAPPED and (not digest or _MAPPED[path] != digest)
    try:
        lib = _load_copy(lib_file) if stale else rt.ffi().load_module(path)
    except Exception as e:
        raise ArtifactError(f"cannot load {lib_file}: {str(e).strip().splitlines()[-1]}") from e
    if not stale:
        _MAPPED[path] = digest
    if digest:
        _LIBRARIES[digest] = lib
    return lib


def _load_copy(lib_file: Path):
    """``lib_file`` loaded from a copy under a name of its own (removed once mapped)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgecompile-lib-") as tmp:
        copy = Path(tmp) / lib_file.name
        shutil.copyfile(lib_file, copy)
        return rt.ffi().load_module(str(copy))


def _check_finite(name: str, arr: np.ndarray) -> None:
    """The run-time NaN policy: float inputs holding NaN or +-Inf are refused, naming the first one.
    (An int8 recipe would quantize NaN to a finite value and return plausible numbers; a float
    recipe spreads it through a row. Neither is an answer, so neither is given.)"""
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise InputMismatchError(
            f"input '{name}' holds {arr[where]} at index {list(where)}: inputs must be finite (NaN and Inf are refused)"
        )


def import_tvm_runtime():
    """``tvm_ffi`` with TVM's runtime library loaded (see :mod:`edgecompile.runtime.tvm_ffi_runtime`)."""
    return rt.ffi()


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
    if n < 1:
        raise InputMismatchError("--threads must be at least 1")
    rt.global_func("runtime.config_threadpool")(1, n)
    return num_threads()


def num_threads() -> int:
    return int(rt.global_func("runtime.NumThreads")())


def flatten_outputs(value) -> list[np.ndarray]:
    """The VM's return value (a tensor, a shape, or nested tuples of them) as a flat array list."""
    if hasattr(value, "numpy"):  # a tvm.runtime.Tensor (the compiler's VM)
        return [value.numpy()]
    if hasattr(value, "__dlpack__"):  # a tvm_ffi.Tensor (our runtime's VM)
        return [rt.to_numpy(value)]
    items = list(value)
    if all(isinstance(v, int) for v in items):  # a ShapeTuple
        return [np.array(items, dtype=np.int64)]
    out = []
    for v in items:
        out.extend(flatten_outputs(v))
    return out
