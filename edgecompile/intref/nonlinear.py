"""numpy references of integer-only softmax, GELU and LayerNorm (I-ViT and I-BERT).

All arithmetic is on int64 arrays with arithmetic shifts and floor division, row-wise over the
last axis; the float scales only pick integer constants, offline. Each function documents its
input range and the widths of its intermediates (the overflow analysis the lowering relies on).

I-ViT (Li & Gu, ICCV 2023):
- :func:`shift_exp`: ``exp`` of a non-positive integer ``d`` at scale ``S`` with shifts only;
- :func:`shiftmax`: softmax of int logits, output ``[0, 2^(k-1) - 1]`` at scale ``2^-(k-1)``;
- :func:`shift_gelu`: ``x * sigmoid(1.702 x)`` with ShiftExp and one integer division;
- :func:`i_layernorm`: mean, sum of squares in int64, integer square root, one division.

I-BERT (Kim et al., ICML 2021):
- :func:`isqrt`: exact ``floor(sqrt(n))`` by integer Newton iteration from a bit-length start;
- :func:`i_exp` / :func:`ibert_softmax`: second-order polynomial exp on fine-scale int32 logits;
- :func:`i_gelu`: the erf polynomial ``sgn(x) (a (min(|x|, -b) + b)^2 + 1)``.
"""

from __future__ import annotations

import math

import numpy as np

INT31 = 2**31 - 1


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def one_at_scale(scale: float) -> int:
    """``I0 = round(1 / S)``: the integer for 1.0 at scale ``S`` (at least 1). TVM's I-ViT uses
    ``trunc(-1/S - 1)``, which is off by one when ``1/S`` is an integer; we round."""
    return max(1, int(math.floor(1.0 / scale + 0.5)))


def shift_exp(d, one: int, n: int, zero_below: bool = False) -> np.ndarray:
    """``exp(d * S)`` for integers ``d <= 0``, as ``e`` at scale ``S / 2^n`` (``one = I0``).

    ``d * log2(e)`` is ``d + (d >> 1) - (d >> 4)`` (x1.4375), capped at ``-n * I0`` so the result
    is at least ``2^-n``; with ``d = -q * I0 + r``, ``2^(r S) ~ 1 + r S / 2`` (``r`` in ``(-I0, 0]``),
    kept exact before the shift: ``e = ((r + 2 I0) << (n - q)) >> 1``. Widths: ``e <= I0 * 2^n``,
    so ``n + log2(I0) + 1`` bits (I-ViT's n=15 and ``I0 <= 100`` fit 23 bits). ``d`` is capped at
    ``-n * I0`` before the multiply too (the same result: ``x1.4375`` only moves it further down), so
    any int32 ``d`` (an int32 logit row holding a -10000 attention mask) cannot overflow.
    ``zero_below``: ``e = 0`` where ``exp(d S) < 2^-n`` instead of the capped ``2^-n`` (Shiftmax: a
    masked or padded key then adds exactly nothing to its row's sum, so a row padded with masked
    keys normalizes exactly like the unpadded row).
    """
    d = np.maximum(_i64(d), -n * one)  # the same result as capping after the multiply, no overflow
    d = d + (d >> 1) - (d >> 4)
    below = d < -n * one
    d = np.maximum(d, -n * one)
    q = d // -one
    r = d + q * one
    e = ((r + 2 * one) << (n - q)) >> 1
    return np.where(below, 0, e) if zero_below else e


WIDE_P = 62  # the wide normalization's reciprocal: 2^62 // sum (sum in int64; e * F <= 2^62)


def shiftmax(
    q, scale: float, n: int = 15, k: int = 8, rounding: bool = False, wide: bool = False, zero_below: bool = True
) -> np.ndarray:
    """Softmax of integer logits ``q`` (scale ``S``) over the last axis: ints in
    ``[0, 2^(k-1) - 1]`` at scale ``2^-(k-1)``.

    ``sum = sum_j e_j`` is at most ``N * I0 * 2^n`` (``N`` = row length) and must stay below
    2^31 (checked; lower ``n`` for long rows or coarse scales); ``f = (2^31 - 1) // sum`` and
    ``out = (e * f) >> (32 - k)`` (``e * f < 2^31``). I-ViT floors, so every probability loses up
    to one LSB and 8-bit rows of 197 tokens sum visibly short of 1; ``rounding`` adds half an LSB
    before the shift. ``zero_below`` (what the recipe uses; I-ViT caps instead): a key whose exp is
    below ``2^-n`` adds nothing (:func:`shift_exp`), so keys masked or padded away add exactly 0.

    ``f`` keeps only ``31 - log2(sum)`` bits: a flat row of 512 logits at ``I0 = 3333`` has
    ``f = 1`` and every output is off by up to half its value. ``wide=True`` (what the recipe
    uses) sums and normalizes in int64 instead: ``F = 2^62 // sum``,
    ``out = (e * F [+ 2^(62-k)]) >> (63 - k)`` (``e <= sum``, so ``e * F <= 2^62``; ``F``'s
    floor costs each output at most ``e / 2^62``). Only the exp's intermediate ``2 I0 2^n`` must
    fit 31 bits (the compiled exp is int32); no bound depends on the row length, so the constants, and the
    integers, of a row are the same whatever the length of the tensor it sits in (a ranged
    artifact's builds and a static artifact of that length compute alike).
    """
    q = _i64(q)
    one = one_at_scale(scale)
    e = shift_exp(q - q.max(axis=-1, keepdims=True), one, n, zero_below)
    total = e.sum(axis=-1, keepdims=True)
    if wide:
        if (2 * one) << n > INT31:
            raise OverflowError(f"Shiftmax exp exceeds 31 bits: I0 = {one} at n = {n}; coarsen the logits")
        f, shift = (np.int64(1) << WIDE_P) // total, WIDE_P + 1 - k
    else:
        if np.any(total > INT31):
            raise OverflowError(f"Shiftmax row sum exceeds 31 bits: lower n (now {n}) for rows of {q.shape[-1]}")
        f, shift = INT31 // total, 32 - k
    out = (e * f + ((1 << (shift - 1)) if rounding else 0)) >> shift
    return np.minimum(out, (1 << (k - 1)) - 1)


def shift_gelu(q, scale: float, n: int | None = None, k: int = 8, row_max: bool = False) -> np.ndarray:
    """``GELU(q * S)`` as ``q * sigma_q`` at scale ``S / 2^(k-1)`` (ShiftGELU).

    ``sigmoid(t)``, ``t = 1.702 x``, from :func:`shift_exp` at scale ``1.702 S``:

    - default: per element, ``p = e^(-|t|)``, ``num = 1`` (``t >= 0``) or ``p``, ``den = 1 + p``
      (as integers at scale ``2^-n``), and ``sigma_q = (num * 2^(k-1) + den / 2) // den`` rounded,
      in ``[0, 2^(k-1)]``. Both exps stay in ``[2^-n, 1]``, so a strongly negative input gets
      ``sigma ~ 0`` whatever else is in its row. ``n`` defaults to the largest value that keeps
      ``num * 2^(k-1) < 2^31``, so everything fits int32 (``n = 20`` for ``I0 <= 7``).
    - ``row_max=True``: I-ViT's form (``n = 23``): ``num = e^(t - m)``, ``den = num + e^(-m)``
      with ``m`` the row max clamped at 0 (an all-negative row would shift ``e^(-m)`` past ``n``:
      the notes' 39-bit overflow), ``sigma_q = (num * ((2^31 - 1) // den)) >> (32 - k)``. Its
      division keeps only ``~8 - log2(I0)`` bits (``f = 2^31 // den ~ 256 / I0``), and when ``m`` is
      large both exps floor at ``2^-n`` for very negative ``t``: at ``S = 0.1`` a row holding 12.7
      maps -12.7 to -6.25.

    ``y = q * sigma_q`` fits ``8 + k`` bits for int8 ``q``.
    """
    q = _i64(q)
    one = one_at_scale(1.702 * scale)
    if row_max:
        n = 23 if n is None else n
        m = np.maximum(q.max(axis=-1, keepdims=True), 0)
        num = shift_exp(q - m, one, n)
        den = num + shift_exp(-m, one, n)
        return q * ((num * (INT31 // np.minimum(den, INT31))) >> (32 - k))
    return q * shift_sigmoid(q, one, k, n)


def shift_sigmoid(q, one: int, k: int = 8, n: int | None = None) -> np.ndarray:
    """``sigmoid(q / I0)`` in ``[0, 2^(k-1)]`` at scale ``2^-(k-1)``, from :func:`shift_exp` (the
    per-element form of :func:`shift_gelu`): ``p = e^(-|t|)``, ``num = 1`` (``t >= 0``) or ``p``,
    ``den = 1 + p`` at scale ``2^-n``, ``sigma = (num * 2^(k-1) + den / 2) // den``. ``n`` defaults
    to the largest that keeps ``num * 2^(k-1) < 2^31`` (all int32)."""
    q = _i64(q)
    if n is None:
        n = 30 - (k - 1) - one.bit_length()
    if n < 1:
        raise ValueError(f"shift_sigmoid: no exponent bits left for I0={one} and k={k}")
    p = shift_exp(-np.abs(q), one, n)
    full = one << n  # e^0
    num = np.where(q >= 0, full, p)
    den = full + p
    return ((num << (k - 1)) + den // 2) // den


def shift_tanh(q, scale: float, k: int = 16) -> np.ndarray:
    """``tanh(q * S)`` as ``2 sigmoid(2 q S) - 1`` (:func:`shift_sigmoid` at ``I0 = round(1 / 2S)``):
    ints in ``[-2^(k-1), 2^(k-1)]`` at scale ``2^-(k-1)``. For BERT's pooler; int32 throughout."""
    return 2 * shift_sigmoid(q, one_at_scale(2 * scale), k) - (1 << (k - 1))


def isqrt(n) -> np.ndarray:
    """Exact ``floor(sqrt(n))`` for integers ``0 <= n < 2^62`` (vectorized Newton iteration).

    Starts at ``2^ceil(bits(n) / 2) >= sqrt(n)`` and stops when the iterate stops decreasing
    (I-BERT's rule; a fixed count from a fixed start, as in I-ViT, does not converge for small
    ``n``); at most ~6 updates for 32-bit inputs.
    """
    n = _i64(n)
    if np.any(n < 0):
        raise ValueError("isqrt of a negative number")
    bits = np.zeros_like(n)
    nz = n > 0
    bits[nz] = np.floor(np.log2(n[nz].astype(np.float64))).astype(np.int64) + 1
    x = np.where(nz, np.int64(1) << ((bits + 1) // 2), 0)
    while True:
        safe = np.where(x > 0, x, 1)
        nxt = np.where(nz, (x + n // safe) // 2, 0)
        done = nxt >= x
        if np.all(done | ~nz):
            return np.where(nz, x, 0)
        x = np.where(done, x, nxt)


def i_layernorm(q, gamma=None, beta=None) -> tuple[np.ndarray, np.ndarray]:
    """LayerNorm of integer rows ``q`` (any scale: it cancels): ``(out, out_scale)``.

    ``mu = round(mean(q))``, ``y = q - mu``, ``var = sum(y^2)`` in int64 (a row of 768 values
    of 3000 LSB reaches 2^32.9, past uint32), ``std = isqrt(var << 16)`` (``sqrt(var)`` with 8
    fractional bits; ``var << 16 < 2^58`` for int16 ``q`` and ``C <= 2^10``), ``f = ((2^31 - 1) << 8)
    // std`` (``< 2^31``), ``out = (y * f) >> 1`` at scale ``sqrt(C) / 2^30`` (``|out| <= 2^30``). A
    constant row (``std = 0``) gives 0, not a division by zero. With ``gamma``/``beta`` the
    scale is per channel, ``sqrt(C) / 2^30 * gamma``, and ``round(beta / gamma / S)`` is added
    (clipped to ``+-(2^30 - 1)``, so the sum stays in int32; ``gamma`` is clamped away from 0).
    """
    q = _i64(q)
    c = q.shape[-1]
    mu = (q.sum(axis=-1, keepdims=True) + c // 2) // c
    y = q - mu
    # std with 8 fractional bits: isqrt(var << 16) = floor(sqrt(var) * 2^8); flooring sqrt(var)
    # itself costs up to 1/std (6.7% at var = 164)
    std = isqrt((y * y).sum(axis=-1, keepdims=True) << 16)
    f = np.where(std > 0, (INT31 << 8) // np.where(std > 0, std, 1), 0)
    out = (y * f) >> 1
    s = math.sqrt(c) / 2**30
    if gamma is None:
        return out, np.float64(s)
    g = np.asarray(gamma, np.float64)
    g = np.where(np.abs(g) < 1e-6, np.where(g < 0, -1e-6, 1e-6), g)
    scale = s * g
    if beta is not None:
        # |out| <= 2^30, so a beta clipped to +-(2^30 - 1) keeps the sum in int32
        bq = np.clip(np.floor(np.asarray(beta, np.float64) / scale + 0.5), -(2**30 - 1), 2**30 - 1)
        out = out + bq.astype(np.int64)
    return out, scale


# -- I-BERT ----------------------------------------------------------------------------------------

EXP_A, EXP_B, EXP_C = 0.35815147, 0.96963238, 1.0  # exp(p) ~ a p^2 + b p + c on (-ln 2, 0]
ERF_A, ERF_B = -0.2888, -1.769


def i_exp(d, scale: float, n: int = 30) -> tuple[np.ndarray, float]:
    """``exp(d * S)`` for fine-scale integers ``d <= 0`` (I-BERT): ``(e, scale_e)``.

    ``d = -z ln2 + p`` with ``L = floor(-ln2 / S)``, ``z = d // L``, ``r = d - z L``; ``exp(p)``
    by the polynomial ``a S^2 (r (r + B) + C)``, then ``<< (n - z)`` (``d`` capped at ``n L``).
    Widths: ``r (r + B) + C`` is about ``2 log2(1/S)`` bits and the shift adds ``n``: 47-54 bits
    for ``S`` in [5e-4, 5e-3] at ``n = 30`` — int64, which the lowering uses.
    """
    d = _i64(d)
    ln2 = int(math.floor(-math.log(2) / scale))  # negative
    b_int = int(math.floor(EXP_B / EXP_A / scale))
    c_int = int(math.floor(EXP_C / EXP_A / scale**2))
    d = np.maximum(d, n * ln2)
    z = d // ln2
    r = d - z * ln2
    poly = r * (r + b_int) + c_int
    return np.maximum(poly << (n - z), 0), EXP_A * scale**2 / 2**n


def ibert_softmax(q, scale: float, k: int = 8, n: int = 30) -> np.ndarray:
    """Softmax of fine-scale int32 logits: ``[0, 2^k - 1]`` at scale ``2^-k`` (unsigned).

    ``e`` from :func:`i_exp` (up to ~54 bits) is brought to 16 bit by a rounding right shift per
    row that puts the row's largest value in ``[2^14, 2^15)`` (I-BERT requantizes with a
    QuantAct(16); a multiply by ``32767 / max`` would overflow int64), then
    ``out = (e16 * (2^32 // sum) + 2^(31-k)) >> (32 - k)``, rounded (I-BERT floors: up to one
    LSB more error); ``e16 * f < 2^47``.
    """
    q = _i64(q)
    e, _ = i_exp(q - q.max(axis=-1, keepdims=True), scale, n)
    top = e.max(axis=-1, keepdims=True)  # the row max's exp: up to ~2^54
    bits = bit_length(top)
    s = np.maximum(bits - 15, 0)  # a per-row shift puts the largest value in [2^14, 2^15)
    e16 = (e + np.where(s > 0, np.int64(1) << np.maximum(s - 1, 0), 0)) >> s
    f = (2**32) // np.maximum(e16.sum(axis=-1, keepdims=True), 1)
    return np.minimum((e16 * f + (1 << (31 - k))) >> (32 - k), 2**k - 1)  # rounded, not floored


def bit_length(x) -> np.ndarray:
    """Bits of non-negative int64 ``x`` (0 for 0), exactly: the count of ``2^t <= x``."""
    x = _i64(x)
    return (x[..., None] >= (np.int64(1) << np.arange(63, dtype=np.int64))).sum(axis=-1).astype(np.int64)


def i_gelu(q, scale: float) -> tuple[np.ndarray, float]:
    """``GELU(q * S)`` for fine-scale integers (I-BERT's i-GELU): ``(y, scale_y)``.

    ``erf(x / sqrt 2) ~ sgn(x) (a (min(|x|, -b) + b)^2 + 1)`` at scale ``a Se^2``
    (``Se = S / sqrt 2``; the scale is negative), ``y = q (P + one)`` at scale ``S a Se^2 / 2``.
    Widths: ``(|q| + B)^2`` reaches 30 bits at ``S = 1e-4`` and ``y`` 33 bits for ``|x| <= 6``:
    int64.
    """
    q = _i64(q)
    se = scale / math.sqrt(2)
    b_int = int(math.floor(ERF_B / se))
    c_int = int(math.floor(1.0 / ERF_A / se**2))
    u = np.minimum(np.abs(q), -b_int)
    poly = np.sign(q) * ((u + b_int) ** 2 + c_int)
    s_erf = ERF_A * se**2
    one = int(math.floor(1.0 / s_erf))
    return q * (poly + one), scale * s_erf / 2
