"""Which layers quantize their activations with run-time scales (``int8:act=``).

A static scale is one per tensor, fixed at calibration; a dynamic one is computed per row (a token)
at run time from the row's own largest ``|x|`` (:func:`edgecompile.intref.dynamic_quantize`), as
ONNX Runtime's dynamic quantization and torchao do. Vision transformers of the DINOv2/CLIP family
carry a few high-norm tokens 10-100x the rest: a static scale wide enough for them leaves every
other token a handful of levels.

- ``act=static``: every layer static; ``act=dynamic``: every linear layer and activation matmul
  dynamic; ``dynamic=LAYERS`` adds those layers (names or fnmatch patterns) to either.
- ``act=auto`` (the default): per layer, from calibration. A static scale costs each element
  the rounding noise ``S^2 / 12`` inside its clipping value ``T`` and the squared distance to
  ``T`` beyond it (from the observer's histogram; after smoothing, ``T`` is the max and nothing is
  clipped); a run-time scale per row costs ``(max_row / 127)^2 / 12``, ``max_row`` the largest
  ``|x|`` of each row calibration saw (:class:`edgecompile.calibrate.capture.RowStats`; for a
  matmul's right operand, each column). A layer goes dynamic when the ratio exceeds the recipe's
  threshold (:func:`auto_gain_db`) on one of its operands: 0 dB in ``int8`` (wherever run-time
  scales are estimated to help at all; an all-zero tensor counts 0 dB), 6 dB (one bit) in the
  integer-only recipes.

  Decisions, from the real DINOv2 ViT-S/14 of the zoo (Pearson r of its map with ORT fp32, min over
  12 held-out crops; ORT ``quantize_dynamic`` 0.9964; Zen 4, 1 thread):

  - The clipping term is counted. By rounding alone (``T^2 / mean(max_row^2)``) the percentile
    clip of DINOv2's massive activations was invisible; ``tests/unit/quant/test_dynamic.py`` has
    the case where it kept a layer static at 2 dB SQNR.
  - ``int8``: 0 dB. Its per-layer gains are 1-12 dB, and the small ones add up over 12 blocks:
    static 0.9935, 6 dB (9 of 97 layers dynamic) 0.9910, 3 dB (40) 0.9901, 0 dB (all 97)
    0.9997. A run-time scale costs little there: 126 against 121 ms static on DINOv2 (1.04x),
    12.3 against 12.5 ms on the real all-MiniLM-L6-v2 at 128 tokens (noise).
  - Integer-only: 6 dB. A power-of-two row scale wastes up to half its levels and costs 1.09x
    the static latency on MiniLM, and on DINOv2 every linear row-shifted gives 0.9853 against
    auto's 0.9835 (the integer nonlinears hold the rest of its loss).

In ``int8`` the scales are float32 (``max|x| / 127``) and the GEMM output is dequantized. In
``int8-integer-only`` they are powers of two, an integer shift per row from the row's integer max
(:func:`edgecompile.intref.row_shift_quantize`), and the accumulator is rescaled by a dyadic
multiplier and that shift (:func:`edgecompile.intref.rescale_shifted`) to one fine static scale, so
no float enters between the input quantize and the output dequantize; there only linear layers
take them (a matmul of two activations would carry two shifts into its rescale: not built).

Decision: ``act=auto`` chooses by the same estimate in both recipes (linear layers only in the
integer-only ones, at their own threshold). It was static in the integer-only recipes while a row-shifted linear after
I-BERT's GELU lost its output (its rescale ratio fell below 2^-32, which ``dyadic`` zeroes: fixed
by :func:`edgecompile.intref.dyadic_shifted`); that bug had looked like a model-level effect. Measured
since (embedding cosine mean against fp32 on held-out SpamAssassin emails; static / auto / every
linear dynamic): all-MiniLM-L6-v2, I-ViT ops 0.9910 / 0.9911 / 0.9914, I-BERT ops 0.9938 / 0.9947
/ 0.9953; all-mpnet-base-v2, I-ViT 0.954 / 0.955 / 0.957, I-BERT 0.976 / 0.981 / 0.981.

int16 activations (``int8:a16=``, :mod:`edgecompile.intref.wide`): a third way to hold a linear
layer's input, 256 times finer than int8 at twice the layer's GEMM. ``a16=auto`` takes the linear
layers whose input, held as ``act`` chose, calibration estimates below :data:`A16_FLOOR_DB` of SQNR
at the layer's output (:func:`input_sqnr_db`). Decision: the floor marks inputs int8 cannot hold
(the issue's DINOv2 at ``act=static`` had late layers at 4-6 dB; outlier channels with smoothing
off, ``tests/unit/quant/test_wide.py``), not a fidelity dial: on the real all-MiniLM-L6-v2 every
linear layer is estimated at 30-40 dB and ``a16=auto`` takes none, while every layer int16 lifts
the spam demo's embedding cosine from 0.99888 to 0.99975 at 1.67x the latency; the accuracy
budget's int16 rung (:mod:`edgecompile.quant.budget`) chooses by measured fidelity instead.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax

from edgecompile.calibrate.observers import rounding_noise
from edgecompile.ir.layers import Layer

AUTO_GAIN_DB = {"int8": 0.0, "integer-only": 6.0}  # act=auto's threshold per recipe (module docstring)
DYNAMIC_KINDS = ("linear", "matmul")
INTEGER_ONLY_KINDS = ("linear",)  # row-shifted matmuls of two activations: not built


def auto_gain_db(integer_only: bool) -> float:
    """The estimated gain at which ``act=auto`` makes a layer dynamic in a recipe."""
    return AUTO_GAIN_DB["integer-only" if integer_only else "int8"]


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


def dynamic_gain_db(static_error: float, mean_square_peak: float) -> float:
    """The dB of error run-time scales save on an operand (module docstring): ``static_error`` the
    mean squared error per element of its static int8 (rounding and clipping:
    :meth:`edgecompile.calibrate.observers.Observer.expected_error`), against the rounding noise of
    a scale per row, ``mean(max_row^2) / (127^2 12)``."""
    dynamic_error = rounding_noise(1.0) * mean_square_peak
    if dynamic_error <= 0 or static_error <= 0:
        return 0.0
    return 10 * math.log10(static_error / dynamic_error)


def choose_dynamic(
    layers: list[Layer], act: str, patterns, gains: dict[str, float], integer_only: bool = False
) -> set[str]:
    """The names of the layers (of the kinds the recipe can make dynamic) to quantize dynamically:
    ``act`` (auto, static, dynamic), the ``patterns`` forced dynamic, and for auto each layer's
    largest operand gain (``gains``) against :func:`auto_gain_db`."""
    kinds, threshold = dynamic_kinds(integer_only), auto_gain_db(integer_only)
    chosen = set()
    for layer in layers:
        if layer.kind not in kinds:
            continue
        if act == "dynamic" or layer.matches(patterns) or (act == "auto" and gains.get(layer.name, 0.0) > threshold):
            chosen.add(layer.name)
    return chosen


A16_FLOOR_DB = 20.0  # a16=auto: a linear layer whose int8 input is estimated below this goes int16


def input_sqnr_db(power, static_noise, dynamic_noise, reach) -> tuple[float, float | None]:
    """``(static, dynamic)`` estimated SQNR in dB of a linear layer's output from its input held
    in int8 (dynamic None where ``dynamic_noise`` is): each input channel's mean square ``power``
    and the error per element of a static scale (``static_noise``, rounding and clipping; per
    channel where smoothed) or of a run-time row scale, weighed by how far the channel reaches the
    output, the squared norm of its row of weights (``reach``), errors taken as independent. By
    the input's own power an outlier channel 80x the rest hides that the others keep a few levels."""
    power, reach = np.asarray(power, np.float64), np.asarray(reach, np.float64)
    signal = float(np.sum(power * reach))

    def db(noise) -> float:
        total = float(np.sum(np.broadcast_to(np.asarray(noise, np.float64), reach.shape) * reach))
        return math.inf if total <= 0 else 10 * math.log10(max(signal, 1e-30) / total)

    return db(static_noise), None if dynamic_noise is None else db(dynamic_noise)


def choose_wide(layers: list[Layer], options, int8_sqnr: dict, dynamic: set) -> set[str]:
    """The linear layers to read int16 activations (``int8:a16=``): those ``options.a16`` names,
    and with ``a16=auto`` those whose input in int8, as ``act`` holds it (``dynamic``: run-time
    scales), is estimated below :data:`A16_FLOOR_DB` (``int8_sqnr``: :func:`input_sqnr_db`)."""
    chosen = set()
    for layer in layers:
        if layer.kind != "linear":
            continue
        held = held_sqnr(int8_sqnr.get(layer.name, (math.inf, None)), layer.name in dynamic)
        if layer.matches(options.a16) or (options.a16_auto and held < A16_FLOOR_DB):
            chosen.add(layer.name)
    return chosen


def held_sqnr(estimates: tuple[float, float | None], dynamic: bool) -> float:
    """Of :func:`input_sqnr_db`'s ``(static, dynamic)``, the one for how the layer holds its input."""
    static, dyn = estimates
    return dyn if dynamic and dyn is not None else static
