"""Build a Relax module for a target profile and export its library.

The Relax pipeline comes from :mod:`edgecompile.lower.pipeline` (our schedules on CPU targets,
TVM's dlight rules on GPU targets). This module owns target construction, compilation and export:

- host-architecture targets are linked with the system C compiler into ``model.so``;
- cross targets are linked with the first ``cross_cc`` of the profile found on PATH;
- CUDA kernels, which TVM exports as source, are also compiled by nvcc into fatbin files of the
  artifact (:mod:`edgecompile.lower.cuda_binary`), so the device needs no compiler;
- without one, the objects are packed into ``model.tar`` (deterministic: sorted, mtime 0) and the
  manifest records the one-line link command to run where the toolchain is.
"""

from __future__ import annotations

import io
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edgecompile.errors import BuildError
from edgecompile.lower.cuda_binary import write_device_code
from edgecompile.targets import TargetProfile

log = logging.getLogger(__name__)


@dataclass
class BuiltLibrary:
    file: Path
    linker: str  # "system cc", a cross compiler name, or "none (objects)"
    link_command: str | None = None
    device_code: list[dict] | None = None  # CUDA: prebuilt fatbins (see lower/cuda_binary.py)


def make_target(profile: TargetProfile):
    """The ``tvm.target.Target`` for a (resolved) profile."""
    import tvm

    try:
        if profile.host:
            return tvm.target.Target(dict(profile.tvm), host=dict(profile.host))
        return tvm.target.Target(dict(profile.tvm))
    except Exception as e:
        raise BuildError(f"TVM rejects the target of profile '{profile.name}': {_last_line(e)}") from e


def compile_module(
    mod,
    profile: TargetProfile,
    tune_trials: int | None = None,
    tuning_root=None,
    progress=None,
    on_fused=None,
    weights=None,
    on_planned=None,
):
    """Run the Relax pipeline and code generation; returns a ``tvm.runtime.Executable``.

    With ``tune_trials`` (CPU targets of this machine), kernels are first tuned into the database
    under ``tuning_root`` (see :mod:`edgecompile.lower.tune`); the tuned build is kept only if the
    whole model measures faster than the untuned one here, since per-kernel timings in isolation
    can mislead (a kernel that wins alone can lose inside the model). ``on_fused(mod)`` sees the
    fused module before scheduling (CPU targets; :func:`edgecompile.lower.pipeline.cpu_pipeline`).
    ``weights`` (a :class:`~edgecompile.lower.external_weights.LiftedWeights`) receives the weights
    taken out of the library, which ``main`` then takes after its inputs; ``on_planned(mod)`` sees
    the kept build's module after static memory planning."""
    target = make_target(profile)
    untuned = _build(mod, target, profile, None, on_fused, weights is not None)
    if tune_trials is None:
        return _chosen(untuned, weights, on_planned)
    import os

    import tvm

    from edgecompile.lower.pipeline import fusion_passes
    from edgecompile.lower.tune import tune

    if target.kind.name != "llvm" or not profile.is_host_arch:
        raise BuildError(f"--tune measures on this machine: it needs a CPU target of this machine, not {profile.name}")
    # MetaSchedule needs the core count; the code generator ignores it.
    tuning_target = tvm.target.Target({**target.export(), "num-cores": len(os.sched_getaffinity(0))})
    with tuning_target:
        fused = tvm.transform.Sequential(fusion_passes(tuning_target))(mod)
    try:
        db = tune(fused, tuning_target, tune_trials, tuning_root, progress)
    except Exception as e:
        raise BuildError(f"tuning failed: {type(e).__name__}: {_last_line(e)}") from e
    tuned = _build(mod, tuning_target, profile, db, None, weights is not None)
    t_untuned, t_tuned = _model_latency(untuned, mod), _model_latency(tuned, mod)
    log.info("whole model: %.3f ms untuned, %.3f ms tuned", t_untuned * 1e3, t_tuned * 1e3)
    return _chosen(tuned if t_tuned < t_untuned else untuned, weights, on_planned)


@dataclass
class _Build:
    executable: object
    weights: object  # LiftedWeights, or None when the weights stay in the library
    planned: list  # the module after static memory planning (one entry)


def _chosen(build: _Build, weights, on_planned):
    if weights is not None:
        weights.arrays = build.weights.arrays
    if on_planned is not None and build.planned:
        on_planned(build.planned[0])
    return build.executable


def _build(mod, target, profile: TargetProfile, db, on_fused=None, lift: bool = False) -> _Build:
    import tvm

    from edgecompile.lower.external_weights import LiftedWeights
    from edgecompile.lower.pipeline import pipeline_for

    weights = LiftedWeights() if lift else None
    planned: list = []
    try:
        with target, _lowering_context(target, profile):
            pipeline = pipeline_for(target, db, on_fused, weights, planned.append)
            return _Build(tvm.compile(mod, target=target, relax_pipeline=pipeline), weights, planned)
    except Exception as e:
        raise BuildError(
            f"TVM could not build the model for {profile.name}: {type(e).__name__}: {_last_line(e)}"
        ) from e


def _lowering_context(target, profile: TargetProfile):
    """The current pass context plus, on CPU targets, the TIR options our schedules rely on
    (:data:`~edgecompile.lower.schedules.cpu_row_reduction.TIR_CONFIG`); on CUDA, CUDA graphs
    where the profile says ``cuda_graphs = true``: TVM's RewriteCUDAGraph lifts the kernels that
    read only the weights (``main``'s parameters after ``num_input``) and planned buffers into
    functions the VM captures as a graph on the first call of each build and replays after, one
    launch instead of one per kernel (MiniLM: ~150 kernels, most of 3-12 us on an H200). Opt-in
    until a GPU run has checked its outputs and timed it (the device was withdrawn before that run)."""
    import tvm

    from edgecompile.lower.schedules.cpu_row_reduction import TIR_CONFIG

    current = tvm.transform.PassContext.current()
    config = {**dict(current.config), **(TIR_CONFIG if target.kind.name == "llvm" else {})}
    if target.kind.name == "cuda" and profile.cuda_graphs:
        config["relax.backend.use_cuda_graph"] = True
    return tvm.transform.PassContext(
        opt_level=current.opt_level, required_pass=current.required_pass, disabled_pass=current.disabled_pass,
        instruments=list(current.instruments), config=config,
    )  # fmt: skip


def _model_latency(build: _Build, mod, runs: int = 20) -> float:
    """Median seconds of ``main`` on random inputs of its static shapes."""
    import statistics

    import numpy as np
    import tvm

    from edgecompile.ir.host import host_vm
    from edgecompile.runtime.model import time_calls

    vm = host_vm(build.executable)
    rng = np.random.default_rng(0)
    args = []
    for p in mod["main"].params:
        shape, dtype = [int(d.value) for d in p.ty.shape.values], str(p.ty.dtype)
        data = rng.standard_normal(shape) if "float" in dtype else np.ones(shape)
        args.append(tvm.runtime.tensor(data.astype(dtype)))
    if build.weights is not None:
        args += [tvm.runtime.tensor(a) for a in build.weights.arrays]
    return statistics.median(time_calls(lambda: vm["main"](*args), runs)) / 1e3


def export(executable, profile: TargetProfile, out_dir: Path) -> BuiltLibrary:
    """Write the library for ``profile`` into ``out_dir`` (for CUDA, its kernels' fatbins too)."""
    built = _export_library(executable, profile, out_dir)
    if profile.tvm.get("kind") == "cuda":
        built.device_code = write_device_code(executable, str(profile.tvm["arch"]), out_dir)
    return built


def _export_library(executable, profile: TargetProfile, out_dir: Path) -> BuiltLibrary:
    linker = profile.find_linker()
    try:
        if linker is None:
            path = out_dir / "model.so"
            executable.export_library(str(path))
            return BuiltLibrary(path, "system cc")
        if linker:
            from tvm.support import cc

            path = out_dir / "model.so"
            executable.export_library(str(path), fcompile=cc.cross_compiler(linker))
            return BuiltLibrary(path, linker)
        path = out_dir / "model.tar"
        executable.export_library(str(path), fcompile=deterministic_tar)
    except Exception as e:
        raise BuildError(f"exporting the library for {profile.name} failed: {_last_line(e)}") from e
    cc = next((c for c in profile.cross_cc if not c.startswith("$")), "cc")
    command = f"mkdir -p objs && tar -xf model.tar -C objs && {cc} -shared -fPIC -o model.so objs/*"
    log.info(
        "no cross compiler for %s found (tried %s); wrote objects to model.tar",
        profile.name,
        ", ".join(profile.cross_cc),
    )
    return BuiltLibrary(path, "none (objects)", command)


def deterministic_tar(output: str, files: list[str]) -> None:
    """Pack ``files`` by base name into an uncompressed tar with fixed metadata."""
    with tarfile.open(output, "w", format=tarfile.USTAR_FORMAT) as tar:
        for f in sorted(files, key=lambda p: Path(p).name):
            data = Path(f).read_bytes()
            info = tarfile.TarInfo(Path(f).name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))


deterministic_tar.output_format = "tar"


def _last_line(e: Exception) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(e).__name__
