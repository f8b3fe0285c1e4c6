"""numpy reference of int16 activations (``int8:a16=``): an int16 x int8 GEMM as two int8 GEMMs.

A linear layer's input ``x`` is held as integers ``z`` in ``[-WIDE_MAX, WIDE_MAX]`` at one scale
``S = max|x| / WIDE_MAX`` (256 times finer than int8's), and split into two int8 bytes
(:func:`split_wide`): ``z = 256 hi + lo`` with ``hi = (z + 128) >> 8`` and ``lo = z - 256 hi``,
both in ``[-128, 127]`` because ``|z| <= 2^15 - 129``. Then ``z W = 256 (hi W) + lo W``: both
products are ordinary int8 x int8 GEMMs with int32 accumulation (exact for ``K < 2^17``), run as
one GEMM over the two stacked along a new leading axis, so the packed int8 weights and kernels are
the int8 path's and no int16 kernel is needed. The cost is the layer's GEMM twice.

Decision: two signed bytes rather than a signed high byte and an unsigned low one (``vpdpbusd``'s
native u8 x s8) because every int8 GEMM we build, on every ISA, takes s8 x s8; the range given up
is 128 of 32768 levels.

Combining the halves:

- integer-only (:func:`wide_rescale`): ``t = 256 acc_hi + acc_lo`` in int64 (``|t| < 2^35`` for
  ``K <= 8192``), times a dyadic multiplier of 23 bits (:func:`dyadic_wide`, so ``t b < 2^58``
  cannot overflow int64 where the 31-bit one of :func:`edgecompile.intref.dyadic` could), rounded
  half up: exact integer arithmetic, bit for bit in compiled code.
- int8: ``(float32(acc_hi) 256 + float32(acc_lo)) S_x S_w[c]`` in float32 (a float output, like
  run-time scales': checked against ONNX Runtime with a tolerance, not bit for bit).
"""

from __future__ import annotations

import numpy as np

WIDE_MAX = 2**15 - 129  # 32639: the largest |z| whose two bytes (split_wide) are both int8
LOW_BITS = 8
DYADIC_BITS = 23  # the multiplier of wide_rescale: 2^22 <= b < 2^23


def wide_quantize(x: np.ndarray, scale: float) -> np.ndarray:
    """``clip(rint(x * float32(1/S)), -WIDE_MAX, WIDE_MAX)`` as int32 (the reciprocal in float32, once)."""
    inv = np.float32(1.0 / np.float32(scale))
    return np.clip(np.rint(np.asarray(x, np.float32) * inv), -WIDE_MAX, WIDE_MAX).astype(np.int32)


def split_wide(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hi, lo)`` int8 with ``z = 256 hi + lo`` for integers ``|z| <= WIDE_MAX``."""
    z = np.asarray(z, np.int32)
    hi = (z + (1 << (LOW_BITS - 1))) >> LOW_BITS
    return hi.astype(np.int8), (z - (hi << LOW_BITS)).astype(np.int8)


def dyadic_wide(ratio: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """``(b, c)`` with ``|ratio| ~ |b| / 2^c``, ``2^22 <= |b| < 2^23``, ``1 <= c <= 62`` and ``b``
    carrying the sign of ``ratio`` (a negative input scale: I-BERT's GELU). Ratios too small for a
    62-bit shift are 0."""
    r = np.asarray(ratio, np.float64)
    if not np.all(np.isfinite(r)):
        raise ValueError("requantization ratios must be finite")
    m, e = np.frexp(np.abs(r))
    b = np.floor(m * 2.0**DYADIC_BITS + 0.5).astype(np.int64)
    c = (DYADIC_BITS - e).astype(np.int64)
    top = b == 2**DYADIC_BITS
    b, c = np.where(top, 2 ** (DYADIC_BITS - 1), b), np.where(top, c - 1, c)
    if np.any(c < 1):
        raise ValueError(f"requantization ratio {np.abs(r).max():g} is too large (>= 2^22)")
    tiny = (c > 62) | (r == 0)
    b, c = np.where(tiny, 0, b), np.where(tiny, 1, c)
    return np.where(r < 0, -b, b).astype(np.int64), c.astype(np.int64)


def wide_rescale(acc_hi: np.ndarray, acc_lo: np.ndarray, b, c) -> np.ndarray:
    """``((256 acc_hi + acc_lo) * b + 2^(c-1)) >> c`` in int64, unclipped (``(b, c)`` from
    :func:`dyadic_wide`, scalars or per channel along the last axis)."""
    t = (np.asarray(acc_hi, np.int64) << LOW_BITS) + np.asarray(acc_lo, np.int64)
    c = np.asarray(c, np.int64)
    return (t * np.asarray(b, np.int64) + (np.int64(1) << (c - 1))) >> c
