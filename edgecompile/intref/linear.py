"""numpy reference of the linear integer ops of the int8 recipe; compiled code matches it bit for bit.

Conventions (see ``shared`` design notes, "Integer semantics"):

- A quantized tensor is int8 ``q`` with a float scale ``S`` (zero point 0): ``x ~ S * q``.
- ``quantize(x, S) = clip(rint(x * (1/S)), -128, 127)`` in float32, ``rint`` rounding half to even
  (what TVM's ``round`` lowers to), the multiply by the float32 reciprocal done once.
- ``dequantize(q, S) = float32(q) * float32(S)``.
- Dyadic requantization: a ratio ``r = S_in / S_out`` is ``b / 2^c`` with ``b`` a 31-bit integer
  (:func:`dyadic`); ``requantize(acc, b, c) = clip((acc * b + 2^(c-1)) >> c)`` in int64,
  rounding half up. ``b`` and ``c`` are scalars or per-channel vectors along the last axis. The
  integer-only recipe requantizes this way (no float between input quantize and output dequantize).
- Float requantization (the int8 recipe): ``requantize_f32(acc, m) = clip(rint(float32(acc) * m))``
  with ``m = float32(S_in / S_out)``. Exactly specified in IEEE float32 (int32 -> float32 and the
  product both round to nearest even; one multiply, so no fused multiply-add can change it), hence
  bit-exact between numpy, x86 and aarch64 builds; it is what XNNPACK's int8 kernels do. Chosen
  because it stays in 32-bit lanes: the int64 dyadic form made a fused int8 GEMM + requantize up to
  1.38x the bare GEMM on AVX2 (1.24x on AVX-512), the float form at most 1.09x on either
  (benchmarks/cpu_vs_onnxruntime.py --kernels-only). ``|acc| > 2^24`` rounds to float32 first: a
  relative error below 2^-24, far under the int8 step.
- ``int_matmul``: int8 x int8 accumulated in int32 (exact: |sum| < 2^31 for K < 2^17).
- ``int_add``: each operand requantized to the output scale with its own (b, c), summed, clipped.
- Dynamic scales (``int8:act=dynamic``): a row's scale is computed at run time from its own largest
  magnitude, :func:`dynamic_quantize`: ``amax = max(max|x|, TINY)`` over the reduced axis (exact),
  ``q = clip(rint(x * float32(127 / amax)), -127, 127)`` and ``S = float32(amax / 127)``, both
  IEEE float32 divisions, once per row. Each row uses the whole int8 range, so a few tokens 10-100x
  larger than the rest no longer flatten everyone else's to a few levels. The GEMM output is
  dequantized: ``float32(acc) * S_row * S_col`` (the product in that order). ``TINY`` keeps an
  all-zero row (padding) at q = 0 instead of 0 * inf.
"""

from __future__ import annotations

import numpy as np

QMIN, QMAX = -128, 127
TINY = np.float32(1e-30)  # floor of a dynamic row's max |x| (an all-zero row quantizes to 0)


def dyadic(ratio: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """``(b, c)`` with ``ratio ~ b / 2^c``, ``2^30 <= b < 2^31`` and ``0 <= c <= 62``.

    ``b = round(m * 2^31)`` for ``ratio = m * 2^e`` (``m`` in [0.5, 1)); when ``m`` rounds up to
    exactly ``2^31`` (ratios just below a power of two) it is renormalised to ``2^30`` with one
    shift less, so ``b`` always fits a signed int32. Ratios too small for a 62-bit shift are 0.
    """
    r = np.asarray(ratio, dtype=np.float64)
    if np.any(r < 0) or not np.all(np.isfinite(r)):
        raise ValueError("requantization ratios must be finite and non-negative")
    m, e = np.frexp(r)
    b = np.floor(m * 2.0**31 + 0.5).astype(np.int64)
    c = (31 - e).astype(np.int64)
    top = b == 2**31
    b = np.where(top, 2**30, b)
    c = np.where(top, c - 1, c)
    if np.any(c < 1):
        raise ValueError(f"requantization ratio {r.max():g} is too large (>= 2^30)")
    tiny = c > 62
    b = np.where(tiny | (r == 0), 0, b)
    c = np.where(tiny | (r == 0), 1, c)
    return b.astype(np.int64), c.astype(np.int64)


def quantize(x: np.ndarray, scale: float) -> np.ndarray:
    inv = np.float32(1.0 / np.float32(scale))
    return np.clip(np.rint(x.astype(np.float32) * inv), QMIN, QMAX).astype(np.int8)


def dequantize(q: np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * np.asarray(scale, np.float32)


def rescale(acc: np.ndarray, b, c) -> np.ndarray:
    """``(acc * b + 2^(c-1)) >> c`` in int64, unclipped (``acc`` int32, ``b < 2^31``)."""
    b, c = np.asarray(b, np.int64), np.asarray(c, np.int64)
    return (acc.astype(np.int64) * b + (np.int64(1) << (c - 1))) >> c


def requantize(acc: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``clip((acc * b + 2^(c-1)) >> c)`` to int8, in int64 (``acc`` int32, ``b < 2^31``)."""
    return np.clip(rescale(acc, b, c), QMIN, QMAX).astype(np.int8)


def requantize_f32(acc: np.ndarray, m) -> np.ndarray:
    """``clip(rint(float32(acc) * m))`` to int8, ``m`` the float32 ratio (scalar or per channel
    along the last axis); rounding half to even."""
    y = acc.astype(np.float32) * np.asarray(m, np.float32)
    return np.clip(np.rint(y), QMIN, QMAX).astype(np.int8)


def dynamic_quantize(x: np.ndarray, axis: int = -1, used: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(q, scale)``: ``x`` as int8 with a float32 scale per slice along ``axis`` (kept as a
    size-1 axis), from that slice's own max ``|x|``; see the module docstring. ``used`` (boolean,
    broadcast to ``x``): only those elements set the scale (the keys some query gives a nonzero
    probability, for a ``P V``'s V); the others are quantized with it."""
    x = np.asarray(x, np.float32)
    magnitude = np.abs(x) if used is None else np.where(used, np.abs(x), np.float32(0))
    amax = np.maximum(magnitude.max(axis=axis, keepdims=True), TINY)
    inv = np.float32(127) / amax
    q = np.clip(np.rint(x * inv), -127, 127).astype(np.int8)
    return q, (amax / np.float32(127)).astype(np.float32)


def dynamic_dequantize(acc: np.ndarray, row_scale, col_scale) -> np.ndarray:
    """``float32(acc) * row_scale * col_scale``, in that order (float32)."""
    return (acc.astype(np.float32) * np.asarray(row_scale, np.float32)) * np.asarray(col_scale, np.float32)


SHIFT_STEPS = 48  # row shifts counted: int64 rows up to 2^54


def row_shift_quantize(z: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """``(q, shift)``: integers ``z`` (int64) as int8 with a power-of-two scale per slice along
    ``axis`` (the integer-only recipe's run-time row scale, ``int8-integer-only:act=``). ``shift`` is
    the least ``n >= 0`` with ``rint(max|z| / 2^n) <= 127``, counted as ``#{k < 48: 2 max|z| >=
    255 * 2^k}``; ``q = clip((z + (2^n >> 1)) >> n, -127, 127)`` (rounding half up), so each row
    uses between 64 and 127 levels at its top."""
    z = np.asarray(z, np.int64)
    m = np.abs(z).max(axis=axis, keepdims=True)
    steps = np.int64(255) << np.arange(SHIFT_STEPS, dtype=np.int64)
    shift = (2 * m[..., None] >= steps).sum(axis=-1).astype(np.int64)
    half = (np.int64(1) << shift) >> 1
    return np.clip((z + half) >> shift, -127, 127).astype(np.int8), shift


def dyadic_shifted(ratio: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """``(b, c)`` with ``ratio ~ b / 2^c`` for :func:`rescale_shifted`: :func:`dyadic` of ``ratio``
    times the most of ``2^SHIFT_STEPS`` that keeps it below ``2^29``, that power added back to
    ``c``, which may pass 62 (a row shift takes it back). Plain :func:`dyadic` zeroes ratios below
    ``2^-62``, and the ratio of a row-shifted operand read at a very fine scale (an I-BERT GELU
    after a row-shifted linear: ``S ~ 1e-13``) is one: the layer's output was its bias alone."""
    r = np.asarray(ratio, np.float64)
    top = float(r.max()) if r.size else 0.0
    head = SHIFT_STEPS if top == 0 else int(np.clip(np.floor(np.log2(2.0**29 / top)), 0, SHIFT_STEPS))
    b, c = dyadic(r * 2.0**head)
    return b, np.where(b == 0, c, c + head)


def rescale_shifted(acc: np.ndarray, b, c, shift) -> np.ndarray:
    """``rescale`` of an accumulator whose operand rows were shifted right by ``shift``, for
    ``(b, c)`` from :func:`dyadic_shifted`: ``(acc * b + 2^(d - 1)) >> d`` with
    ``d = clip(c - shift, 1, 63)`` (int64, unclipped; ``d = 63`` gives 0 for any int32 ``acc``)."""
    b, c = np.asarray(b, np.int64), np.asarray(c, np.int64)
    d = np.clip(c - np.asarray(shift, np.int64), 1, 63)
    return (acc.astype(np.int64) * b + (np.int64(1) << (d - 1))) >> d


def int_matmul(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """int8 x int8 -> int32 matmul (numpy broadcasting of batch dims), plus an int32 bias."""
    acc = np.matmul(a.astype(np.int64), b.astype(np.int64))
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    return acc.astype(np.int32)


def int_add(qa: np.ndarray, ba, ca, qb: np.ndarray, bb, cb) -> np.ndarray:
    """Residual add of two int8 tensors at different scales into a third scale."""
    return np.clip(rescale(qa, ba, ca) + rescale(qb, bb, cb), QMIN, QMAX).astype(np.int8)


def int_relu(q: np.ndarray) -> np.ndarray:
    return np.maximum(q, 0).astype(np.int8)
