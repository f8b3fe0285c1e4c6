"""Which layers quantize their activations with run-time scales (``int8:act=``).

A static scale is one per tensor, fixed at calibration; a dynamic one is computed per row (a token)
at run time from the row's own largest ``|x|`` (:func:`edgecompile.intref.dynamic_quantize`), as
ONNX Runtime's dynamic quantization and torchao do. Vision transformers of the DINOv2/CLIP family
carry a few high-norm tokens 10-100x the rest: a static scale wide enough for them leaves every
other token a handful of levels.

- ``act=static``: every layer static; ``act=dynamic``: every linear layer and activation matmul
  dynamic; ``dynamic=LAYERS`` adds those layers (names or fnmatch patterns) to either.
- ``act=auto`` (the default): per layer, from calibration. Rounding noise is ``S^2 / 12`` per
  element, so run-time scales cut the noise of an operand by ``T^2 / mean(max_row^2)``: ``T`` its
  static clipping value (after smoothing where smoothing applies), ``max_row`` the largest ``|x|``
  of each row calibration saw (:class:`edgecompile.calibrate.capture.RowStats`; for a matmul's
  right operand, each column). A layer goes dynamic when that gain reaches :data:`AUTO_GAIN_DB`
  on one of its operands: one bit of int8 resolution. Tensors with even rows gain 1-3 dB (the
  percentile clip sits a little above a typical row's max), so they stay static and keep the fused
  static requantization; a tensor with outlier rows gains 10-30 dB. The estimate ignores the
  clipping error a static scale adds on the outlier rows themselves, so it errs toward static.

In ``int8`` the scales are float32 (``max|x| / 127``) and the GEMM output is dequantized. In
``int8-integer-only`` they are powers of two, an integer shift per row from the row's integer max
(:func:`edgecompile.intref.row_shift_quantize`), and the accumulator is rescaled by a dyadic
multiplier and that shift (:func:`edgecompile.intref.rescale_shifted`) to one fine static scale, so
no float enters between the input quantize and the output dequantize; there only linear layers
take them (a matmul of two activations would carry two shifts into its rescale: not built).

Decision: ``act=auto`` chooses by the same rule in both recipes (linear layers only in the
integer-only ones). It was static in the integer-only recipes while a row-shifted linear after
I-BERT's GELU lost its output (its rescale ratio fell below 2^-32, which ``dyadic`` zeroes: fixed
by :func:`edgecompile.intref.dyadic_shifted`); that bug had looked like a model-level effect. Measured
since (embedding cosine mean against fp32 on held-out SpamAssassin emails; static / auto / every
linear dynamic): all-MiniLM-L6-v2, I-ViT ops 0.9910 / 0.9911 / 0.9914, I-BERT ops 0.9938 / 0.9947
/ 0.9953; all-mpnet-base-v2, I-ViT 0.954 / 0.955 / 0.957, I-BERT 0.976 / 0.981 / 0.981.
"""

from __future__ import annotations

import math

from tvm import relax

from edgecompile.ir.layers import Layer

AUTO_GAIN_DB = 6.0  # one bit
DYNAMIC_KINDS = ("linear", "matmul")
INTEGER_ONLY_KINDS = ("linear",)  # row-shifted matmuls of two activations: not built


def dynamic_kinds(integer_only: bool) -> tuple[str, ...]:
    """The layer kinds a recipe can give run-time scales."""
    return INTEGER_ONLY_KINDS if integer_only else DYNAMIC_KINDS


def dynamic_operands(layer: Layer, nonneg: set) -> list[tuple[relax.Var, int]]:
    """``(var, axis)`` of each operand a dynamic ``layer`` scales at run time: a linear layer's
    input per row, a matmul's left operand per row (not a softmax output: static on [0, 1]) and its
    right operand per column."""
    if layer.kind == "linear":
        return [(layer.inputs[0], -1)]
    if layer.kind == "matmul":
        a, b = layer.inputs
        return [*([] if a in nonneg else [(a, -1)]), (b, -2)]
    return []


def dynamic_gain_db(threshold: float, mean_square_peak: float) -> float:
    """The dB of rounding noise run-time scales save on an operand (module docstring)."""
    if mean_square_peak <= 0 or threshold <= 0:
        return 0.0
    return 10 * math.log10(threshold**2 / mean_square_peak)


def choose_dynamic(
    layers: list[Layer], act: str, patterns, gains: dict[str, float], kinds: tuple[str, ...] = DYNAMIC_KINDS
) -> set[str]:
    """The names of the layers (of ``kinds``) to quantize dynamically: ``act`` (auto, static,
    dynamic), the ``patterns`` forced dynamic, and for auto each layer's largest operand gain (``gains``)."""
    chosen = set()
    for layer in layers:
        if layer.kind not in kinds:
            continue
        if act == "dynamic" or layer.matches(patterns) or (act == "auto" and gains.get(layer.name, 0) >= AUTO_GAIN_DB):
            chosen.add(layer.name)
    return chosen
