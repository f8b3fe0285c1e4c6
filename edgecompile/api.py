"""The Python API the CLI wraps: :func:`compile` a model to an artifact, :func:`inspect_model`
for op coverage before compiling, :func:`load` to run an artifact."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from edgecompile.errors import RecipeError
from edgecompile.frontend.spec import parse_shape

log = logging.getLogger("edgecompile")


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
) -> Path:
    """Compile ``model`` for ``target`` into an artifact directory and return its path.

    ``model`` is an ONNX file path, an ``onnx.ModelProto``, a ``torch.nn.Module`` (with
    ``example_inputs`` or ``input_shapes``) or a ``torch.export`` program. ``target`` is a profile
    name (see ``edgecompile targets``) or a profile file path. ``input_shapes`` fixes symbolic
    dimensions, e.g. ``{"input_ids": (1, 128)}`` or ``{"input_ids": "1x128"}``. ``output``
    defaults to ``build/<model>-<target>``. ``tune=N`` runs up to N MetaSchedule trials first
    (CPU targets) with the database under ``tuning_db`` (default ``~/.cache/edgecompile/tuning``);
    ``tune_progress(done, total, elapsed_s)`` reports the search.

    Recipes that quantize (``int8``) need ``calib``: an ``.npz`` with one array per input stacked
    along a leading sample axis, a directory of them, or an iterable of ``{name: array}``;
    ``keep_float`` names layers (or fnmatch patterns, e.g. ``linear.0``, ``matmul.*``) to leave in
    float; ``calib_progress(stage, done, total)`` reports calibration; ``on_quantized`` receives
    the calibrated :class:`edgecompile.quant.plan.QuantResult` (per-layer sensitivity reuses it).
    """
    from edgecompile.artifact.package import constant_bytes, finish, prepare_output
    from edgecompile.calibrate.data import load_samples
    from edgecompile.frontend import import_model
    from edgecompile.ir.energy import model_energy
    from edgecompile.ir.native_output import captured
    from edgecompile.lower.build import compile_module, export, make_target
    from edgecompile.lower.float_ops import float_kernels, float_kernels_of
    from edgecompile.recipe import parse_recipe
    from edgecompile.targets import get_profile

    say = progress or (lambda _msg: None)
    profile = get_profile(target).resolved()
    rec = parse_recipe(recipe)
    shapes = {k: parse_shape(v) if isinstance(v, str) else tuple(v) for k, v in (input_shapes or {}).items()}
    out = Path(output) if output is not None else Path("build") / f"{_model_stem(model)}-{profile.name}"
    staging = prepare_output(out)
    try:
        say(f"importing {_model_stem(model)}")
        with captured(log):
            imported = import_model(model, shapes, input_dtypes, example_inputs)
        mod, quant, lowrank = imported.mod, None, None
        part = rec.quant_part()
        lr_part = rec.part("lowrank")
        hash_part = rec.part("hash-attention")
        if part is None and keep_float:
            raise RecipeError(f"recipe {rec} does not quantize: --keep-float needs an int8 recipe")
        if part is None and lr_part is None and hash_part is None and calib is not None:
            raise RecipeError(
                f"recipe {rec} does not quantize: --calib needs an int8, lowrank or hash-attention recipe"
            )
        if profile.runtime == "coreml":  # an ML Program through coremltools, not a TVM build
            manifest = _coreml(imported, rec, profile, staging, calib, keep_float, say, calib_progress)
            return finish(staging, out, manifest)
        half = rec.part("fp16") is not None
        if half and (part is not None or hash_part is not None):
            raise RecipeError(
                f"recipe {rec}: on TVM targets fp16 is a recipe of its own (add lowrank if you like); int8 with "
                "fp16 activations is a Core ML recipe"
            )
        qconfig = _quant_config(part, keep_float) if part is not None else None
        samples = None  # lowrank alone, without data: plain SVD
        if hash_part is not None and calib is None:
            raise RecipeError("hash-attention learns its hash from calibration data: pass --calib")
        if qconfig is not None or calib is not None:
            samples = load_samples(calib, imported.inputs, qconfig[0].samples if qconfig else None)
        if lr_part is not None:  # factorize first, then quantize both factors
            mod, lowrank = _factorize(imported, mod, lr_part, profile, samples, say, calib_progress)
        hashed = None
        if hash_part is not None:
            mod, hashed = _hash_attention(imported, mod, hash_part, profile, samples, say, calib_progress)
        if qconfig is not None:
            mod, quant = _quantize(imported, mod, *qconfig, samples, say, calib_progress, on_quantized)
        if half:
            from edgecompile.half.rewrite import to_fp16

            mod = to_fp16(mod)
        energy = model_energy(mod, profile.energy)
        say(f"building for {profile.name} ({profile.tvm.get('kind')}, recipe {rec})")
        with captured(log):
            if tune is not None:
                say(f"tuning up to {tune} trials")
            fused: list = []  # the CPU build hands over its fused module: no second fusion run
            executable = compile_module(
                mod, profile, tune, tuning_db and Path(tuning_db), tune_progress, on_fused=fused.append
            )
            float_ops = float_kernels_of(fused[0]) if fused else float_kernels(mod, make_target(profile))
            say("exporting the library")
            lib = export(executable, profile, staging)
        manifest = {
            "target": profile.to_json(),
            "recipe": rec.to_json(),
            "source": imported.source,
            "inputs": [s.to_json() for s in imported.inputs],
            "outputs": [s.to_json() for s in imported.outputs],
            "library": lib.file.name,
            "linker": lib.linker,
            "link_command": lib.link_command,
            "device_code": lib.device_code,
            "tuning": None if tune is None else {"trials": tune},
            "quantization": quant,
            "lowrank": lowrank,
            "hash_attention": hashed,
            "float_ops": float_ops,
            "energy": energy,
            "weights_bytes": constant_bytes(mod),
        }
        return finish(staging, out, manifest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _progress(say, calib_progress):
    def report(stage: str, done: int, total: int) -> None:
        say(f"{stage} {done}/{total}")
        if calib_progress:
            calib_progress(stage, done, total)

    return report


def _host_build():
    from edgecompile.lower.build import compile_module
    from edgecompile.targets import get_profile

    host = get_profile("native").resolved()
    return lambda m: compile_module(m, host)


def _factorize(imported, mod, part, profile, samples, say, calib_progress):
    """Factorize ``mod`` for the ``lowrank`` recipe part; returns (module, manifest entry)."""
    from edgecompile.ir.native_output import captured
    from edgecompile.lowrank.plan import config_from_options, lowrank_model

    config = config_from_options(part.options)
    say(f"factorizing linear layers ({config.spec})")
    with captured(log):
        result = lowrank_model(
            mod,
            samples,
            [s.name for s in imported.inputs],
            config,
            _host_build(),
            profile,
            _progress(say, calib_progress),
        )
    return result.mod, result.to_json(config)


def _coreml(imported, rec, profile, staging, calib, keep_float, say, calib_progress) -> dict:
    """A Core ML target's manifest: lowrank first where the recipe has it, then the ``model.mlpackage``
    export (weight-only int8 needs no calibration; see :mod:`edgecompile.coreml.export`)."""
    from edgecompile.calibrate.data import load_samples
    from edgecompile.coreml.export import check_recipe, export_coreml

    check_recipe(rec, keep_float)
    mod, lowrank, lr_part = imported.mod, None, rec.part("lowrank")
    if lr_part is not None:
        samples = load_samples(calib, imported.inputs, None) if calib is not None else None
        mod, lowrank = _factorize(imported, mod, lr_part, profile, samples, say, calib_progress)
    elif calib is not None:
        log.info("Core ML weight-only int8 needs no calibration: --calib is not used")
    return export_coreml(imported, mod, rec, profile, staging, lowrank=lowrank, progress=say)


def _hash_attention(imported, mod, part, profile, samples, say, calib_progress):
    """Rewrite attention blocks for the ``hash-attention`` recipe part; returns (module, manifest entry)."""
    from edgecompile.hashattn.plan import config_from_options, hash_attention_model
    from edgecompile.ir.native_output import captured

    config = config_from_options(part.options)
    say(f"learning binary-hash attention ({config.spec})")
    with captured(log):
        result = hash_attention_model(
            mod,
            samples,
            [s.name for s in imported.inputs],
            config,
            _host_build(),
            profile.energy,
            _progress(say, calib_progress),
        )
    return result.mod, result.to_json(config)


def _quant_config(part, keep_float):
    """``(QuantConfig, keep_worst)`` of the ``int8`` / ``int8-integer-only`` part, ``keep_float`` added."""
    import dataclasses

    from edgecompile.quant.plan import config_from_options

    config, keep_worst = config_from_options(part.options, part.preset == "int8-integer-only")
    if keep_float:
        config = dataclasses.replace(config, keep_float=config.keep_float + tuple(keep_float))
    return config, keep_worst


def _quantize(imported, mod, config, keep_worst, samples, say, calib_progress, on_quantized=None):
    """Calibrate and rewrite ``mod`` for the quantizing recipe part; returns (module, manifest entry)."""
    from edgecompile.ir.native_output import captured
    from edgecompile.quant.plan import quantize_model

    say(f"calibrating on {len(samples)} samples ({config.observer})")
    with captured(log):
        result = quantize_model(
            mod,
            samples,
            [s.name for s in imported.inputs],
            config,
            _host_build(),
            keep_worst,
            _progress(say, calib_progress),
        )
    if on_quantized is not None:
        on_quantized(result)
    return result.mod, result.to_json(config)


def inspect_model(model, opset: int | None = None):
    """Op coverage of an ONNX model: a list of :class:`edgecompile.frontend.op_support.OpCoverage`."""
    from edgecompile.frontend.onnx_import import read_onnx
    from edgecompile.frontend.op_support import coverage

    proto = read_onnx(model) if isinstance(model, (str, Path)) else model
    return coverage(proto)


def load(path: str | Path):
    """Load an artifact for inference (same as :func:`edgecompile.runtime.load`)."""
    from edgecompile.runtime import load as _load

    return _load(path)


def _model_stem(model) -> str:
    if isinstance(model, (str, Path)):
        return Path(model).stem
    return type(model).__name__.lower()
