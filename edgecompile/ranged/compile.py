"""Compile a ranged artifact: one static build per combination of bucket sizes, stages planned
once on the largest, weights stored once (design: :mod:`edgecompile.ranged`)."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecompile.errors import CalibrationError, EdgeCompileWarning, InputSpecError
from edgecompile.ranged.plan import RangePlan
from edgecompile.ranged.shared_weights import SharedWeights


def check_supported(profile, example_inputs) -> None:
    """Refuse what a ranged compile cannot do, before any work."""
    if profile.runtime == "coreml" or profile.tvm.get("kind") not in ("llvm", "cuda", "opencl"):
        raise InputSpecError(
            f"ranged input shapes (LO..HI) are supported on CPU, CUDA and OpenCL targets; {profile.name} needs "
            "fixed shapes"
        )
    if example_inputs is not None:
        raise InputSpecError("ranged input shapes are given with input_shapes, not example_inputs")


def build_tag(combo: dict[str, int]) -> str:
    """``seq16`` / ``batch2-seq16``: a build's name in its library file (group names made file-safe)."""
    safe = lambda g: "".join(c if c.isalnum() else "_" for c in g)  # noqa: E731
    return "-".join(f"{safe(g)}{s}" for g, s in combo.items())


def padded_samples(calib, plan: RangePlan, specs) -> Iterator[dict]:
    """The calibration samples of ``calib``, each of any shape in range, zero-padded to the largest
    build's shapes (the one calibration runs on) as a :class:`edgecompile.calibrate.data.PaddedSample`
    that knows its own sizes; a sample out of range or whose grouped dimensions disagree is a
    :class:`CalibrationError` naming it."""
    from edgecompile.calibrate.data import PaddedSample, iter_samples
    from edgecompile.runtime.buckets import input_sizes, pad_to

    top = plan.shapes(plan.combos()[-1])
    section = plan.to_json()
    json_specs = [{"name": s.name, "shape": list(top[s.name]), "dtype": s.dtype} for s in specs]
    for i, sample in enumerate(iter_samples(calib)):
        arrays = {k: np.asarray(v) for k, v in sample.items()}
        known = {s["name"] for s in json_specs}
        if known <= set(arrays):
            try:
                sizes = input_sizes(section, json_specs, {k: arrays[k].shape for k in known})
            except Exception as e:  # InputMismatchError: said as a calibration error
                raise CalibrationError(f"calibration sample {i}: {e}") from None
            arrays = PaddedSample({k: (pad_to(a, top[k]) if k in known else a) for k, a in arrays.items()}, sizes)
        yield arrays  # missing or unknown inputs: load_samples names them


def output_axes(plan: RangePlan, combos: list[dict], outputs: list[list]) -> dict[str, dict[str, str]]:
    """Per output, the axes whose size is a group's bucket size in every build: those are sliced
    back at run time. An axis that changes otherwise cannot be sliced: refused."""
    follows: dict[str, dict[str, str]] = {}
    for k, spec in enumerate(outputs[-1]):
        for axis in range(len(spec.shape)):
            sizes = [outs[k].shape[axis] for outs in outputs]
            if len(set(sizes)) == 1:
                continue
            group = next((g for g in plan.sizes if all(s == c[g] for s, c in zip(sizes, combos))), None)
            if group is None:
                raise InputSpecError(
                    f"output '{spec.name}' has dimension {axis} of sizes {sizes} across the builds "
                    f"{[build_tag(c) for c in combos]}: it follows no ranged input dimension, so it cannot be "
                    "cut back to an input's length; compile a fixed shape"
                )
            follows.setdefault(spec.name, {})[str(axis)] = group
    return follows


def strip_debug(path: Path, profile) -> bool:
    """Drop the DWARF sections TVM's LLVM codegen writes into ``path`` (about 40% of a build's
    library, read by nothing at run time: the VM finds its functions through the dynamic symbols,
    and ``.symtab`` stays for profilers). A ranged artifact holds one library per build, so this
    keeps it near the static artifact's size. Needs binutils' ``strip`` for the target (the cross
    compiler's, ``aarch64-linux-gnu-strip``); without one the library is left as it is."""
    tools = ["strip"] if profile.is_host_arch else []
    tools += [cc[: -len("gcc")] + "strip" for cc in profile.cross_cc if cc.endswith("gcc")]
    tool = next((t for t in tools if shutil.which(t)), None)
    if tool is None or path.suffix != ".so":
        return False
    return subprocess.run([tool, "--strip-debug", str(path)], capture_output=True).returncode == 0


def move_library(built, staging: Path, tag: str) -> str:
    """Move a build's library (and a CUDA build's fatbins, renamed ``kernels-TAG-<i>.<arch>.fatbin`` in
    its ``device_code`` entries) out of its scratch directory into ``staging`` as ``model.TAG.so``."""
    src = Path(built.library.file)
    name = f"model.{tag}{src.suffix}"
    shutil.move(str(src), staging / name)
    for entry in built.library.device_code or []:
        moved = f"kernels-{tag}-{entry['file'].removeprefix('kernels-')}"
        shutil.move(str(src.parent / entry["file"]), staging / moved)
        entry["file"] = moved
    shutil.rmtree(src.parent, ignore_errors=True)
    return name


def replay_stages(mod, stages, ctx, apply_stages):
    """``mod`` (another build's import) through the stages already planned on the largest build:
    quantization re-applies that calibration, lowrank those factors (the ranks chosen at the largest
    build's length), hash-attention those hashes on the same blocks; the other stages (fp16, bf16)
    are deterministic."""
    for stage, options in stages:
        if stage.manifest_key == "quantization":
            mod = ctx.results["quant"].calibration.retarget(mod).rewrite()
        elif stage.manifest_key == "lowrank":
            mod = ctx.results["lowrank"].retarget(mod)
        elif stage.manifest_key == "hash_attention":
            mod = ctx.results["hash-attention"].retarget(mod)
        else:
            mod = apply_stages(mod, [(stage, options)], ctx)[0]
    return mod


def _plan_stages(job, ctx, top, probe, combos: list[dict], follows: dict):
    """``(module, sections)``: the largest build through the recipe's stages, each calibrating one
    leaving the samples' padding out of its statistics (:mod:`edgecompile.calibrate.padding`),
    found against ``probe`` (the smallest build) carried through the stages before it."""
    from edgecompile.calibrate.padding import Padding

    first = {int(a): g for a, g in follows.get(top.outputs[0].name, {}).items()}
    ctx.padding = Padding(probe.mod, combos[-1], combos[0], first) if probe is not top else None
    warn_short_samples(ctx.samples, combos[-1])
    mod, sections = top.mod, {}
    for i, step in enumerate(job.stages):
        mod, section = job.apply_stages(mod, [step], ctx)
        sections.update(section)
        if ctx.padding is not None and any(s.needs_calib or s.uses_calib for s, _ in job.stages[i + 1 :]):
            ctx.padding.probe = replay_stages(ctx.padding.probe, [step], ctx, job.apply_stages)
    return mod, sections


def warn_short_samples(samples, top: dict[str, int]) -> None:
    """An :class:`~edgecompile.errors.EdgeCompileWarning` when the longest calibration sample of a
    group covers less than half its range: calibration sees no position past it (the padding is
    not observed), so longer inputs meet activations no scale was fitted to."""
    sizes = [s.sizes for s in samples or () if getattr(s, "sizes", None)]
    for group, hi in top.items():
        longest = max((s[group] for s in sizes if group in s), default=hi)
        if 2 * longest < hi:
            warnings.warn(
                f"the calibration samples reach {longest} of '{group}' (the artifact takes up to {hi}): the "
                f"scales describe positions up to {longest} only, so longer inputs may be clipped; calibrate with "
                "samples as long as the inputs the model will run",
                EdgeCompileWarning,
                stacklevel=2,
            )


@dataclass
class Job:
    """One compile, as :func:`edgecompile.api.compile` hands it over: its arguments and the steps of
    a fixed-shape compile (which this module runs once per build)."""

    model: object
    profile: object
    rec: object
    stages: list
    input_dtypes: dict | None
    calib: object
    say: Callable[[str], None]
    calib_progress: Callable | None
    on_quantized: Callable | None
    import_model: Callable  # (model, shapes, dtypes) -> ImportedModel
    stage_context: Callable  # (imported, profile, stages, calib, say, calib_progress) -> StageContext
    apply_stages: Callable  # (mod, stages, ctx) -> (mod, sections)
    build: Callable  # (mod, out_dir) -> api._Built, weights not written
    manifest: Callable  # (imported, mod, built, sections) -> Manifest
    build_host: Callable | None = None  # (mod, out_dir) -> a float build for this machine's CPU


def compile_ranged(job, plan: RangePlan, staging: Path):
    """The manifest of a ranged artifact whose files are written into ``staging``."""
    from edgecompile.artifact.weights_blob import write_weights
    from edgecompile.ranged.check import check_padding, check_padding_on_host

    combos = plan.combos()
    imports = []
    for i, combo in enumerate(reversed(combos)):  # the largest first: the stages plan on it
        job.say(f"importing build {i + 1}/{len(combos)} ({build_tag(combo)})")
        imports.append(job.import_model(job.model, plan.shapes(combo), job.input_dtypes))
    imports.reverse()
    top = imports[-1]
    calib = None if job.calib is None else padded_samples(job.calib, plan, top.inputs)
    ctx = job.stage_context(top, job.profile, job.stages, calib, job.say, job.calib_progress)
    follows = output_axes(plan, combos, [imp.outputs for imp in imports])
    mod_top, sections = _plan_stages(job, ctx, top, imports[0], combos, follows)
    if job.on_quantized is not None and "quant" in ctx.results:
        job.on_quantized(ctx.results["quant"])
    builds, libraries, lists, shared = [], [], [], SharedWeights()
    for combo, imp in zip(combos, imports):
        last = imp is top
        mod = mod_top if last else replay_stages(imp.mod, job.stages, ctx, job.apply_stages)
        scratch = staging if last else staging / f".build-{build_tag(combo)}"
        scratch.mkdir(exist_ok=True)
        job.say(f"building {build_tag(combo)}")
        built = job.build(mod, scratch)
        libraries.append(built.library.file.name if last else move_library(built, staging, build_tag(combo)))
        strip_debug(staging / libraries[-1], job.profile)
        lists.append(shared.add(built.arrays))
        built.arrays = []
        builds.append(built)
    section = write_weights(shared.arrays, staging)
    ranged = {
        **plan.to_json(),
        "outputs": follows,
        "builds": [{"sizes": c, "library": lib, "weights": ids} for c, lib, ids in zip(combos, libraries, lists)],
    }
    sample = ctx.samples[0] if ctx.samples else None
    if runs_here(job.profile):
        job.say("checking that padding leaves the outputs unchanged")
        check_padding(staging, ranged, section, top, sample)
    elif job.build_host is not None:
        job.say("checking on this machine's CPU (float) that padding leaves the outputs unchanged")
        check_padding_on_host(imports, combos, ranged, sample, job.build_host)
    final = builds[-1]
    final.weights = section
    if any(b.library.device_code for b in builds):  # every build's kernels, matched by source hash at load
        final.library.device_code = [e for b in builds for e in b.library.device_code or []]
    final.memory = {**final.memory, "weights_bytes": section["bytes"] if section else 0,
                    "library_bytes": sum((staging / lib).stat().st_size for lib in libraries)}  # fmt: skip
    manifest = job.manifest(top, mod_top, final, sections)
    manifest.inputs = [_ranged_spec(s, plan) for s in manifest.inputs]
    manifest.extra["ranged"] = ranged
    return manifest


def runs_here(profile) -> bool:
    """Whether this machine can run ``profile``'s builds (its architecture and CPU features)."""
    from edgecompile.runtime.hostinfo import cpu_flags

    return profile.device == "cpu" and profile.is_host_arch and set(profile.cpu_features) <= cpu_flags()


def _ranged_spec(spec: dict, plan: RangePlan) -> dict:
    """An input's manifest entry with ``ranges``: ``[lo, hi]`` per ranged axis, None elsewhere."""
    ranges = [None] * len(spec["shape"])
    for d in plan.dims:
        if d.input == spec["name"]:
            ranges[d.axis] = [d.lo, d.hi]
    return {**spec, "ranges": ranges} if any(ranges) else spec
