"""The Python API the CLI wraps: :func:`compile` a model to an artifact, :func:`apply_recipe` for
the rewritten module alone, :func:`inspect_model` for op coverage before compiling, :func:`load`
to run an artifact.

``compile`` is a loop: import the model, apply the recipe's stages in the order written (each a
:class:`edgecompile.ir.stage.Stage` from the registry in :mod:`edgecompile.recipe`), then hand the
module to the target's backend (:mod:`edgecompile.lower` for TVM targets, :mod:`edgecompile.coreml`
for Core ML) and seal the artifact (:mod:`edgecompile.artifact`).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from edgecompile.errors import RecipeError
from edgecompile.frontend.spec import parse_shape

log = logging.getLogger("edgecompile")
MANIFEST_SECTIONS = ("quantization", "lowrank", "hash_attention")  # every TVM manifest has these keys
WARN_SHARE = 0.005  # a fallback kernel with less of the model's estimated operations is only logged


def compile(  # noqa: A001 - the product's verb
    model,
    target: str = "native",
    output: str | Path | None = None,
    *,
    input_shapes: dict[str, tuple[int, ...] | str] | None = None,
    input_dtypes: dict[str, str] | None = None,
    recipe: str | Path | None = "fp32",
    example_inputs=None,
    progress: Callable[[str], None] | None = None,
    tune: int | None = None,
    tuning_db: str | Path | None = None,
    tune_progress: Callable[[int, int, float], None] | None = None,
    calib=None,
    keep_float: list[str] | None = None,
    calib_progress: Callable[[str, int, int], None] | None = None,
    on_quantized: Callable[[object], None] | None = None,
    force: bool = False,
    sign: str | Path | None = None,
    buckets: dict[str, list[int]] | None = None,
) -> Path:
    """Compile ``model`` for ``target`` into an artifact directory and return its path.

    ``model``: an ONNX file path, an ``onnx.ModelProto``, a ``torch.nn.Module`` (with
    ``example_inputs`` or ``input_shapes``) or a ``torch.export`` program; ``target``: a profile name
    (``edgecompile targets``) or file; ``input_shapes`` fixes symbolic dimensions (``{"input_ids":
    "1x128"}``); ``output`` defaults to ``build/<model>-<target>``. ``tune=N`` runs up to N
    MetaSchedule trials (CPU targets; database under ``tuning_db``, default
    ``~/.cache/edgecompile/tuning``), ``tune_progress(done, total, elapsed_s)`` reports them.
    Recipes that quantize need ``calib``: an ``.npz`` with one array per input stacked along a
    leading sample axis, a directory of them, or an iterable of ``{name: array}``; ``keep_float``
    names layers (or fnmatch patterns: ``matmul.*``) to leave in float; ``calib_progress(stage,
    done, total)`` reports calibration; ``on_quantized`` receives the calibrated
    :class:`edgecompile.quant.plan.QuantResult` (per-layer sensitivity reuses it). An existing
    ``output`` is replaced only if it is an artifact with no files it does not list (``force``:
    even with them); ``sign`` names an Ed25519 private key (``edgecompile keygen``) to sign it with.
    A range in ``input_shapes`` (``"1x1..256"``) makes a ranged artifact (:mod:`edgecompile.ranged`);
    ``buckets`` (``{"seq": [16, 64, 256]}``) replaces a group's default bucket sizes."""
    from edgecompile.recipe import parse_recipe
    from edgecompile.targets import get_profile

    say = progress or (lambda _msg: None)
    profile = get_profile(target).resolved()
    rec = parse_recipe(recipe)
    stages = checked_stages(rec, profile, calib, keep_float)
    ranges = _ranges(model, input_shapes, buckets, profile, example_inputs)
    out = Path(output) if output is not None else Path("build") / f"{_model_stem(model)}-{profile.name}"
    staging, seal = _prepare_output(out, force, sign)
    steps = dict(say=say, calib_progress=calib_progress, on_quantized=on_quantized, tune=tune, tuning_db=tuning_db,
                 tune_progress=tune_progress)  # fmt: skip
    try:
        if ranges is not None:
            return seal(_ranged(model, ranges, profile, rec, stages, staging, input_dtypes, calib, **steps))
        shapes = (input_shapes, input_dtypes, example_inputs)
        return seal(_fixed(model, shapes, profile, rec, stages, staging, calib, keep_float, **steps))
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _prepare_output(out: Path, force: bool, sign) -> tuple[Path, Callable]:
    """The staging directory of ``out`` (checked replaceable) and ``seal(manifest)``, which seals,
    signs (with the private key file ``sign``, if given) and moves the artifact into place."""
    from edgecompile.artifact.package import finish, prepare_output
    from edgecompile.artifact.signing import load_private_key

    key = load_private_key(Path(sign)) if sign is not None else None
    staging = prepare_output(out, force)
    return staging, lambda manifest: finish(staging, out, manifest, force, key)


def _import(model, input_shapes, input_dtypes, example_inputs, say):
    """The frontend's model of ``model`` (its TVM noise on stdout captured into the log)."""
    from edgecompile.frontend import import_model
    from edgecompile.ir.native_output import captured

    say(f"importing {_model_stem(model)}")
    with captured(log):
        return import_model(model, _shapes(input_shapes), input_dtypes, example_inputs)


def checked_stages(rec, profile, calib, keep_float: list[str] | None = None) -> list[tuple]:
    """The recipe's ``(stage, options)`` pairs for ``profile``, with ``keep_float`` added to the
    quantizing part's options; refuses what cannot run before any work is done."""
    coreml = profile.runtime == "coreml"
    stages = rec.stages(exclusive=not coreml)
    quant = [i for i, (s, _) in enumerate(stages) if s.manifest_key == "quantization"]
    if keep_float and not quant:
        raise RecipeError(f"recipe {rec} does not quantize: --keep-float needs an int8 recipe")
    if calib is not None and not any(s.needs_calib or s.uses_calib for s, _ in stages):
        raise RecipeError(f"recipe {rec} does not quantize: --calib needs an int8, lowrank or hash-attention recipe")
    if calib is None and not coreml:
        missing = next((s for s, _ in stages if s.missing_calib is not None), None)
        if missing is not None:
            raise missing.missing_calib()
    if keep_float and not coreml:
        i = quant[0]
        stage, options = stages[i]
        stages[i] = (stage, dataclasses.replace(options, keep_float=options.keep_float + tuple(keep_float)))
    return stages


def stage_context(imported, profile, stages, calib, say=None, calib_progress=None):
    """The :class:`edgecompile.ir.stage.StageContext` of one compile: calibration samples (loaded
    once, checked against the model's inputs, where a stage reads them), builds, target facts."""
    from edgecompile.calibrate.data import load_samples
    from edgecompile.ir.stage import StageContext
    from edgecompile.lower.build import compile_module

    say = say or (lambda _msg: None)
    samples = None
    if calib is not None and any(s.needs_calib or s.uses_calib for s, _ in stages):
        counts = [o.samples for _, o in stages if getattr(o, "samples", None) is not None]
        samples = load_samples(calib, imported.inputs, counts[0] if counts else None)

    def report(stage: str, done: int, total: int) -> None:
        say(f"{stage} {done}/{total}")
        if calib_progress:
            calib_progress(stage, done, total)

    return StageContext(
        input_names=[s.name for s in imported.inputs],
        samples=samples,
        profile=profile,
        host_build=host_build(),
        target_build=lambda m: compile_module(m, profile),
        gemm_tile=gemm_tile(profile),
        say=say,
        progress=report,
    )


def apply_stages(mod, stages, ctx) -> tuple[object, dict]:
    """``mod`` through each stage in order; returns the module and the stages' manifest sections."""
    from edgecompile.ir.native_output import captured

    sections: dict = {}
    for stage, options in stages:
        with captured(log):
            mod, entry = stage.apply(mod, options, ctx)
        if stage.manifest_key is not None:
            sections[stage.manifest_key] = entry
    return mod, sections


def apply_recipe(model, recipe: str = "fp32", calib=None, *, target: str = "native", input_shapes=None):
    """The Relax module of ``model`` after ``recipe``'s stages, before lowering (for inspecting a
    rewrite or building it with other settings); returns ``(module, StageContext)``."""
    from edgecompile.frontend import import_model
    from edgecompile.recipe import parse_recipe
    from edgecompile.targets import get_profile

    profile = get_profile(target).resolved()
    stages = checked_stages(parse_recipe(recipe), profile, calib)
    imported = import_model(model, _shapes(input_shapes))
    ctx = stage_context(imported, profile, stages, calib)
    return apply_stages(imported.mod, stages, ctx)[0], ctx


def host_build() -> Callable:
    """IRModule -> executable built for this machine (calibration, sensitivity and gate runs)."""
    from edgecompile.lower.build import compile_module
    from edgecompile.targets import get_profile

    host = get_profile("native").resolved()
    return lambda m: compile_module(m, host)


def gemm_tile(profile) -> int:
    """The N width of ``profile``'s fp32 GEMM register tile (24 on AVX2, 64 on AVX-512), or 16 off
    LLVM CPU targets: ranks that are multiples of it fill whole tiles."""
    if profile.tvm.get("kind") != "llvm":
        return 16
    from edgecompile.lower.build import make_target
    from edgecompile.lower.schedules.isa import vector_isa
    from edgecompile.lower.schedules.tiles import gemm_nr

    return gemm_nr(vector_isa(make_target(profile)), None, 32)


@dataclasses.dataclass
class _Built:
    library: object  # lower.build.BuiltLibrary
    float_ops: list
    weights: dict | None  # the manifest's weights section (runtime/weights.py)
    memory: dict
    kernels: list[dict]
    arrays: list = dataclasses.field(default_factory=list)  # the lifted weights, in main's order


def _build(mod, profile, staging: Path, tune, tuning_db, tune_progress, say, rec, write: bool = True) -> _Built:
    """Lower, build and export ``mod`` for a TVM target: the library, its weights file (``write``;
    else only its arrays, for a ranged artifact to store once), its float kernels and memory plan."""
    from edgecompile.artifact.weights_blob import write_weights
    from edgecompile.ir.native_output import captured
    from edgecompile.lower.build import compile_module, export, make_target
    from edgecompile.lower.external_weights import LiftedWeights
    from edgecompile.lower.float_ops import float_kernels, float_kernels_of
    from edgecompile.lower.kernel_table import kernel_table
    from edgecompile.lower.memory_plan import memory_plan

    say(f"building for {profile.name} ({profile.tvm.get('kind')}, recipe {rec})")
    with captured(log):
        if tune is not None:
            say(f"tuning up to {tune} trials")
        fused: list = []  # the CPU build hands over its fused module: no second fusion run
        planned: list = []
        weights = LiftedWeights()
        executable = compile_module(
            mod,
            profile,
            tune,
            tuning_db and Path(tuning_db),
            tune_progress,
            on_fused=fused.append,
            weights=weights,
            on_planned=planned.append,
        )
        float_ops = float_kernels_of(fused[0]) if fused else float_kernels(mod, make_target(profile))
        say("exporting the library and its weights")
        lib = export(executable, profile, staging)
        section = write_weights(weights.arrays, staging) if write else None
    plan = memory_plan(planned[0]) if planned else {}
    code = lib.file.stat().st_size
    size = section["bytes"] if section else sum(a.nbytes for a in weights.arrays)
    memory = {"weights_bytes": size, **plan, "library_bytes": code}
    gpu = profile.tvm.get("kind") != "llvm"
    kernels = kernel_table(planned[0], "dlight:gpu" if gpu else "unscheduled") if planned else []
    _warn_fallback(kernels)
    return _Built(lib, float_ops, section, memory, kernels, weights.arrays)


def _warn_fallback(kernels: list[dict]) -> None:
    """A kernel none of our schedules took runs on the generic fallback schedule: often many times
    slower than it could be. Say so at compile time, naming it and its share of the model's ops."""
    import warnings

    from edgecompile.errors import EdgeCompileWarning
    from edgecompile.lower.kernel_table import fallback_share

    for name, share in fallback_share(kernels):
        if share < WARN_SHARE:
            log.info("kernel %s runs on the fallback schedule (~%.2f%% of the model's operations)", name, 100 * share)
            continue
        warnings.warn(
            f"kernel {name} has no schedule of ours and runs on the generic fallback schedule "
            f"(~{share:.1%} of the model's estimated operations): it may be slow; `edgecompile bench "
            "ARTIFACT --profile` shows its time",
            EdgeCompileWarning,
            stacklevel=2,
        )


def _tvm_manifest(imported, mod, rec, profile, built: _Built, tune, sections: dict):
    from edgecompile.artifact.package import constant_bytes
    from edgecompile.ir.energy import model_energy
    from edgecompile.runtime.manifest import Manifest

    lib = built.library
    return Manifest.describing(
        imported,
        rec,
        profile,
        library=lib.file.name,
        linker=lib.linker,
        link_command=lib.link_command,
        tuning=None if tune is None else {"trials": tune},
        **{key: sections.get(key) for key in MANIFEST_SECTIONS},
        float_ops=built.float_ops,
        energy=model_energy(mod, profile.energy),
        extra={
            "device_code": lib.device_code,
            "weights_bytes": constant_bytes(mod),
            "weights": built.weights,
            "memory": built.memory,
            "kernels": built.kernels,
            # a stage's own section (bf16) where only its builds have one
            **{k: v for k, v in sections.items() if k not in MANIFEST_SECTIONS},
        },
    )


def _coreml(imported, rec, stages, profile, staging, calib, keep_float, say, calib_progress):
    """A Core ML target's manifest: the stages Core ML takes from us (lowrank) first, then the
    ``model.mlpackage`` export, which does fp16 and weight-only int8 itself (no calibration)."""
    from edgecompile.coreml.export import check_recipe, export_coreml

    check_recipe(rec, keep_float)
    ours = [(s, o) for s, o in stages if s.coreml]
    if calib is not None and not ours:
        log.info("Core ML weight-only int8 needs no calibration: --calib is not used")
    ctx = stage_context(imported, profile, ours, calib, say, calib_progress)
    mod, sections = apply_stages(imported.mod, ours, ctx)
    return export_coreml(imported, mod, rec, profile, staging, lowrank=sections.get("lowrank"), progress=say)


def _fixed(model, shapes, profile, rec, stages, staging, calib, keep_float, *, say, calib_progress, on_quantized,
           tune, tuning_db, tune_progress):  # fmt: skip
    """The manifest of a fixed-shape compile into ``staging``; ``shapes``: (input_shapes, input_dtypes,
    example_inputs)."""
    imported = _import(model, *shapes, say)
    if profile.runtime == "coreml":  # an ML Program through coremltools, not a TVM build
        return _coreml(imported, rec, stages, profile, staging, calib, keep_float, say, calib_progress)
    ctx = stage_context(imported, profile, stages, calib, say, calib_progress)
    mod, sections = apply_stages(imported.mod, stages, ctx)
    if on_quantized is not None and "quant" in ctx.results:
        on_quantized(ctx.results["quant"])
    built = _build(mod, profile, staging, tune, tuning_db, tune_progress, say, rec)
    return _tvm_manifest(imported, mod, rec, profile, built, tune, sections)


def _ranged(model, ranges, profile, rec, stages, staging, input_dtypes, calib, *, say, calib_progress, on_quantized,
            tune, tuning_db, tune_progress):  # fmt: skip
    """The manifest of a ranged compile (:mod:`edgecompile.ranged.compile`), run with this module's steps."""
    from edgecompile.ranged.compile import Job, compile_ranged
    from edgecompile.targets import get_profile

    job = Job(
        model, profile, rec, stages, input_dtypes, calib, say, calib_progress, on_quantized,
        import_model=lambda m, shapes, dtypes: _import(m, shapes, dtypes, None, lambda _msg: None),
        stage_context=stage_context,
        apply_stages=apply_stages,
        build=lambda mod, out_dir: _build(mod, profile, out_dir, tune, tuning_db, tune_progress, say, rec, write=False),
        manifest=lambda imp, mod, built, sections: _tvm_manifest(imp, mod, rec, profile, built, tune, sections),
        # where the padding check runs for a target this machine cannot run (resolved only then)
        build_host=lambda mod, out_dir: _build(mod, get_profile("native").resolved(), out_dir, None, None, None,
                                               lambda _m: None, "fp32", write=False),
    )  # fmt: skip
    return compile_ranged(job, ranges, staging)


def _shapes(input_shapes) -> dict:
    return {k: parse_shape(v) if isinstance(v, str) else tuple(v) for k, v in (input_shapes or {}).items()}


def _ranges(model, input_shapes, buckets, profile, example_inputs):
    """The :class:`edgecompile.ranged.plan.RangePlan` of ``input_shapes`` when one has a range (checked
    against what a ranged compile supports), else None."""
    from edgecompile.frontend.spec import is_ranged, parse_shape_spec

    parsed = {
        k: parse_shape_spec(v) if isinstance(v, str) else tuple(tuple(d) if isinstance(d, list) else d for d in v)
        for k, v in (input_shapes or {}).items()
    }
    if not any(is_ranged(s) for s in parsed.values()):
        if buckets:
            raise RecipeError("--buckets needs a ranged input shape (e.g. --input-shape input_ids=1x1..256)")
        return None
    from edgecompile.ranged.compile import check_supported
    from edgecompile.ranged.plan import onnx_dim_names, range_plan

    plan = range_plan(parsed, onnx_dim_names(model), buckets)
    check_supported(profile, example_inputs)
    return plan


def inspect_model(model, opset: int | None = None):
    """Op coverage of an ONNX model: a list of :class:`edgecompile.frontend.op_support.OpCoverage`."""
    from edgecompile.frontend.onnx_import import read_onnx
    from edgecompile.frontend.op_support import coverage

    proto = read_onnx(model) if isinstance(model, (str, Path)) else model
    return coverage(proto)


def load(path, trusted_keys=None):
    """Load an artifact for inference; see :func:`edgecompile.runtime.load` (``trusted_keys``: public
    keys one of which must have signed it)."""
    from edgecompile.runtime import load as _load

    return _load(path, trusted_keys)


def _model_stem(model) -> str:
    if isinstance(model, (str, Path)):
        return Path(model).stem
    return type(model).__name__.lower()
