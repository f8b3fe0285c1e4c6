"""Core ML export: the Relax ``main`` as an ML Program (coremltools' MIL builder) in ``model.mlpackage``.

Both frontends (ONNX and ``torch.export``) produce Relax; after ``FoldConstant`` its dataflow is
walked binding by binding and each Relax op is emitted as MIL ops (:data:`OPS`, in
:mod:`edgecompile.coreml.ops`; the walk is :mod:`edgecompile.coreml.mil`). An op without a
mapping is a :class:`~edgecompile.errors.BuildError` naming the op and its bindings. Integer
tensors are int32 in Core ML (it has no int64 model inputs): an int64 input of the model (token
ids) is an int32 input of the package, listed in the manifest's ``coreml`` section.

Recipes on a Core ML target (``minimum_deployment_target`` comes from the profile):

- ``fp32``: compute precision float32; ``fp16``: float16 weights and activations (the inputs and
  outputs stay float32, cast at the edges). The ``fp16`` preset is Core ML only for now: the API
  raises :class:`~edgecompile.errors.RecipeError` for it on TVM targets.
- ``int8`` / ``int8-integer-only``: weight-only int8 (``linear_quantize_weights``, symmetric,
  per output channel, weights of at least :data:`WEIGHT_THRESHOLD` elements); activations stay in
  the compute precision (float32, or float16 with ``fp16+int8``). Core ML's activation int8 needs
  calibration through coremltools' experimental API, so ``--calib`` is not used and the PTQ
  options (observer, keep_float, ...) are refused. Integer-only softmax, GELU, LayerNorm and tanh
  have no Core ML equivalent: they stay Core ML float ops, listed in ``coreml.stayed_float``.
- ``lowrank`` is applied to the Relax graph before the export; ``hash-attention`` is refused.

Linux cannot run Core ML predictions; the artifact is checked structurally (spec, op list, weight
dtypes) by the tests. Op and const names are derived from the Relax bindings and the package's
``Manifest.json`` identifiers from its paths, so the same model gives the same package bytes.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

from edgecompile.coreml.mil import to_mil
from edgecompile.coreml.ops import OPS
from edgecompile.coreml.spec import features, program_ops, weight_dtypes
from edgecompile.errors import BuildError, RecipeError, TargetError
from edgecompile.runtime.manifest import Manifest
from edgecompile.version import __version__

__all__ = [
    "NONLINEAR",
    "OPS",
    "PACKAGE",
    "WEIGHT_THRESHOLD",
    "check_recipe",
    "deployment_target",
    "export_coreml",
    "program_ops",
    "to_mil",
    "weight_dtypes",
]

log = logging.getLogger("edgecompile")

PACKAGE = "model.mlpackage"
WEIGHT_THRESHOLD = 2048  # coremltools' default: smaller consts (biases, norms) keep the compute precision
NONLINEAR = ("softmax", "gelu", "layer_norm", "tanh", "erf")  # integer-only in TVM builds, float in Core ML


def check_recipe(rec, keep_float: list[str] | None = None) -> None:
    """Refuse what a Core ML target cannot honour, with what to do instead."""
    if rec.part("hash-attention") is not None:
        raise RecipeError(
            "hash-attention is not supported on Core ML targets (its packed-code kernels are TVM kernels); "
            "compile for a TVM target (e.g. --target aarch64-linux) or drop hash-attention from the recipe"
        )
    if rec.part("bf16") is not None:
        raise RecipeError(
            "bf16 is a recipe for CPUs with bf16 dot products on TVM targets; Core ML's reduced precision is "
            "float16: use --recipe fp16 (the Neural Engine and GPU run it natively)"
        )
    part = rec.quant_part()
    if part is not None:
        extra = sorted(k for k in part.options if k not in ("ops", "softmax", "gelu", "layernorm", "tanh"))
        if extra or keep_float:
            names = ", ".join(extra + (["keep_float"] if keep_float else []))
            raise RecipeError(
                f"{part.preset} on a Core ML target is weight-only int8 (no calibration): the options {names} "
                "do not apply; drop them, or compile for a TVM target for calibrated int8"
            )


def export_coreml(
    imported,
    mod,
    rec,
    profile,
    staging: Path,
    *,
    lowrank: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Convert ``mod`` (the Relax module of ``imported``) to ``staging/model.mlpackage`` for ``profile``
    with recipe ``rec``; returns the artifact's manifest (without the file checksums)."""
    ct = _coremltools()
    from tvm import relax

    from edgecompile.ir.energy import model_energy
    from edgecompile.ir.native_output import captured

    say = progress or (lambda _msg: None)
    target = deployment_target(profile)
    with captured(log):  # TVM's native warnings go to the log
        mod = relax.transform.FoldConstant()(mod)
    fp16 = rec.part("fp16") is not None
    quant = rec.quant_part()
    say(
        f"converting to a Core ML ML Program for {profile.minimum_deployment_target} (recipe {rec}"
        + (": weight-only int8)" if quant else ")")
    )
    model = _convert(ct, mod, imported, profile, target, fp16, quant is not None)
    _save(model, rec, staging / PACKAGE)
    coreml = _coreml_section(ct, model.get_spec(), profile, fp16, quant)
    return Manifest.describing(
        imported,
        rec,
        profile,
        library=PACKAGE,
        linker=None,
        link_command=None,
        tuning=None,
        quantization=None,
        lowrank=lowrank,
        hash_attention=None,
        float_ops=None,
        energy=model_energy(mod, profile.energy),
        extra={"coreml": coreml},
    )


def _convert(ct, mod, imported, profile, target, fp16: bool, quantize: bool):
    """The ``MLModel`` of ``mod`` (weights int8 when ``quantize``); coremltools' failures as :class:`BuildError`."""
    precision = ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32
    try:
        prog = to_mil(mod, [s.name for s in imported.inputs], [s.name for s in imported.outputs], target, fp16)
        with contextlib.redirect_stderr(io.StringIO()):  # coremltools' per-pass progress bars
            model = ct.convert(
                prog,
                convert_to="mlprogram",
                minimum_deployment_target=target,
                compute_precision=precision,
                skip_model_load=True,
            )
            if quantize:
                model = _quantize_weights(model)
    except (ValueError, TypeError, NotImplementedError, AssertionError, RuntimeError) as e:
        raise BuildError(f"coremltools could not convert the model for {profile.name}: {e}") from e
    return model


def _save(model, rec, path: Path) -> None:
    """Write the package to ``path`` with our metadata and without anything that changes run to run."""
    meta = model.user_defined_metadata
    meta.pop("com.github.apple.coremltools.conversion_date", None)  # same model, same bytes
    meta["com.edgecompile.version"], meta["com.edgecompile.recipe"] = __version__, str(rec)
    model.save(str(path))
    _stable_identifiers(path)


def _coreml_section(ct, spec, profile, fp16: bool, quant) -> dict:
    """The manifest's ``coreml`` section, read off the saved package's ``spec``."""
    ops = program_ops(spec)
    stayed = sorted(op for op in NONLINEAR if ops.get(op)) if quant and quant.preset == "int8-integer-only" else []
    if stayed:
        log.info("Core ML has no integer-only %s: they stay float ops", ", ".join(stayed))
    return {
        "minimum_deployment_target": profile.minimum_deployment_target,
        "coremltools_version": ct.__version__,
        "compute_precision": "float16" if fp16 else "float32",
        "weights": (
            f"int8 (weight-only, symmetric per channel, consts of >= {WEIGHT_THRESHOLD} elements)"
            if quant
            else ("float16" if fp16 else "float32")
        ),
        "inputs": features(spec.description.input),
        "outputs": features(spec.description.output),
        "ops": dict(sorted(ops.items())),
        "stayed_float": stayed,
        "weight_dtypes": weight_dtypes(spec),
    }


def deployment_target(profile):
    """The ``coremltools.target`` member named by the profile's ``minimum_deployment_target``."""
    ct = _coremltools()
    name = profile.minimum_deployment_target
    known = list(ct.target.__members__)  # with the aliases: macOS14 is iOS17's opset
    if not name or name not in known:
        raise TargetError(
            f"target profile {profile.name} (runtime coreml) needs minimum_deployment_target, one of "
            f"{', '.join(known)}; got {name!r}"
        )
    return ct.target[name]


def _coremltools():
    # its import warns about untested torch/scikit-learn versions and the missing macOS-only runtime
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    try:
        import coremltools as ct
    except ImportError as e:
        raise BuildError("Core ML targets need coremltools: pip install 'edgecompile[coreml]'") from e
    return ct


def _quantize_weights(model):
    from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

    config = OptimizationConfig(
        global_config=OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=WEIGHT_THRESHOLD
        )
    )
    return linear_quantize_weights(model, config)


def _stable_identifiers(package: Path) -> None:
    """Replace the random item identifiers of ``Manifest.json`` by ones derived from the item paths."""
    manifest = package / "Manifest.json"
    data = json.loads(manifest.read_text())
    entries = data.get("itemInfoEntries", {})
    new_ids = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, e.get("path", old))).upper() for old, e in entries.items()}
    data["itemInfoEntries"] = {new_ids[k]: v for k, v in sorted(entries.items(), key=lambda kv: new_ids[kv[0]])}
    data["rootModelIdentifier"] = new_ids.get(data.get("rootModelIdentifier"), data.get("rootModelIdentifier"))
    manifest.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n")
