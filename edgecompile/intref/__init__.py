"""numpy references of the integer ops edgecompile emits; compiled code matches them bit for bit.

- :mod:`.linear`: quantize/dequantize, dyadic requantization, int8 matmul, integer add and ReLU
  (the ``int8`` recipe).
- :mod:`.wide`: int16 activations (``int8:a16=``), an int16 x int8 GEMM as two int8 GEMMs.
- :mod:`.nonlinear`: the integer-only softmax, GELU and LayerNorm of I-ViT (Shiftmax, ShiftGELU,
  I-LayerNorm) and I-BERT (i-exp softmax, i-GELU, integer square root).
"""

from edgecompile.intref.linear import (
    QMAX,
    QMIN,
    SHIFT_STEPS,
    TINY,
    dequantize,
    dyadic,
    dyadic_shifted,
    dynamic_dequantize,
    dynamic_quantize,
    int_add,
    int_matmul,
    int_relu,
    quantize,
    requantize,
    requantize_f32,
    rescale,
    rescale_shifted,
    row_shift_quantize,
)
from edgecompile.intref.wide import (
    WIDE_MAX,
    dyadic_wide,
    split_wide,
    wide_quantize,
    wide_rescale,
)

__all__ = [
    "WIDE_MAX",
    "dyadic_wide",
    "split_wide",
    "wide_quantize",
    "wide_rescale",
    "QMAX",
    "QMIN",
    "SHIFT_STEPS",
    "TINY",
    "dequantize",
    "dyadic",
    "dyadic_shifted",
    "dynamic_dequantize",
    "dynamic_quantize",
    "int_add",
    "int_matmul",
    "int_relu",
    "quantize",
    "requantize",
    "requantize_f32",
    "rescale",
    "rescale_shifted",
    "row_shift_quantize",
]
