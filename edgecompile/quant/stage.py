"""The ``int8`` and ``int8-integer-only`` stages: calibrate on the samples, rewrite linear layers,
activation matmuls and adds (and, integer-only, the nonlinears) into integer ops."""

from __future__ import annotations

from edgecompile.errors import CalibrationError
from edgecompile.ir.stage import Stage, StageContext

INT8_OPTIONS = {
    "observer": "activation range observer: minmax, percentile (default), mse or entropy",
    "percentile": "percentile of |x| for the percentile observer (default 99.99)",
    "samples": "calibration samples to use (default: all given)",
    "keep_float": "layers to leave in float, names or patterns separated by ';' (e.g. linear.0;matmul.*)",
    "keep_worst": "keep the k layers with the lowest SQNR in float (default 0)",
    "act": "activation scales: auto (default: per layer, run-time scales where calibration shows rows of very "
    "different ranges, e.g. outlier tokens), static (one per tensor from "
    "calibration) or dynamic (per row, computed at run time: float in int8, for linear layers and matmuls; "
    "power-of-two shifts in int8-integer-only, for linear layers)",
    "dynamic": "layers given run-time activation scales whatever act says, names or patterns separated by ';'",
    "max_drop": "accuracy budget, e.g. 1% (or 0.01): the largest drop of the output's cosine similarity to the "
    "float model, checked on the last quarter of --calib (held out from calibration); layers most sensitive "
    "first go to run-time scales, then float, until it holds (see inspect --quant)",
    "metric": "what max_drop measures: cosine (default) or pearson (cosine of the mean-centred outputs: for "
    "outputs far from zero, e.g. a sigmoid map, where cosine stays near 1 whatever the error)",
    "bias_correction": "on: each linear layer's bias absorbs the mean output shift its rounded int8 weights cause, "
    "from the input's per-channel means in calibration (default on in int8, off in int8-integer-only)",
    "rounding": "how weights are rounded to int8: gptq (default: each layer's output error on the calibration "
    "inputs minimised, Frantar et al.; where calibration saw fewer than two rows per layer input, nearest) or "
    "nearest",
    "a16": "int16 activations for linear layers (an int16 x int8 GEMM run as two int8 GEMMs: twice that layer's "
    "GEMM time): off (default), auto (the layers whose int8 input calibration estimates too coarse) or names or "
    "patterns separated by ';'",
    "smooth": "SmoothQuant strength alpha for linear inputs, per-channel ranges moved into the weights: "
    "auto (default: chosen per tensor from calibration statistics), a number in [0, 1], or 0 (off)",
}
NONLINEAR_OPTIONS = {
    "ops": "the integer nonlinears: mixed (default: I-ViT's Shiftmax and I-LayerNorm, I-BERT's i-GELU), ivit "
    "(Shiftmax, ShiftGELU, I-LayerNorm) or ibert (i-exp softmax, i-GELU, integer-sqrt LayerNorm); also written "
    "as a bare word, int8-integer-only:ibert",
    "softmax": "per-op override: ivit, ibert or float",
    "gelu": "per-op override: ivit, ibert or float (erf and tanh forms)",
    "layernorm": "per-op override: ivit, ibert or float",
    "tanh": "per-op override: ivit (ShiftExp sigmoid) or float",
}


def _parse(integer_only: bool):
    def parse(options: dict[str, str]):
        from edgecompile.quant.options import QuantOptions

        return QuantOptions.from_options(options, integer_only)

    return parse


def _missing_calib() -> CalibrationError:
    return CalibrationError("this recipe quantizes activations and needs calibration data: pass --calib FILE.npz")


def _apply(mod, options, ctx: StageContext):
    """Calibrate and rewrite ``mod``; the full :class:`edgecompile.quant.plan.QuantResult` goes to
    ``ctx.results`` (per-layer sensitivity reuses its calibration)."""
    from edgecompile.quant.plan import quantize_model

    ctx.say(f"calibrating on {len(ctx.samples)} samples ({options.observer})")
    result = quantize_model(mod, ctx.samples, ctx.input_names, options, ctx.host_build, ctx.progress, ctx.padding)
    ctx.results["quant"] = result
    return result.mod, result.to_json(options)


INT8 = Stage(
    "int8",
    "int8 post-training quantization: integer linear layers and matmuls, float32 requantization (needs --calib)",
    INT8_OPTIONS,
    _parse(False),
    _apply,
    order=30,
    manifest_key="quantization",
    missing_calib=_missing_calib,
    exclusive=("fp16",),
)
INT8_INTEGER_ONLY = Stage(
    "int8-integer-only",
    "int8 with integer-only softmax, GELU, LayerNorm and tanh: no float arithmetic between the input "
    "quantize and the output dequantize (needs --calib)",
    {**INT8_OPTIONS, **NONLINEAR_OPTIONS},
    _parse(True),
    _apply,
    order=30,
    manifest_key="quantization",
    missing_calib=_missing_calib,
    exclusive=("fp16", "int8"),
)
