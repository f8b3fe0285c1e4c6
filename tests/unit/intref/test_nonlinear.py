"""numpy references of the integer-only ops: golden vectors, error bounds against the float ops
and the pitfalls from shared/research/int_ops.md (overflow, convergence, constant rows)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgecompile.intref import nonlinear as nl


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


# -- golden vectors (the notes' int64 re-implementation of the released code) ---------------------


def test_shift_exp_golden():
    e = nl.shift_exp([0, -1, -5, -10, -15, -30], one=10, n=15)
    assert list(e) == [327680, 311296, 212992, 131072, 73728, 17408]


def test_shiftmax_golden():
    q = np.array([0, -10, -20, -40, -127, 5, 5, 3])
    assert list(nl.shiftmax(q, 0.1, n=15, k=8)) == [21, 7, 2, 0, 0, 33, 33, 29]
    assert list(nl.shiftmax(q, 0.1, n=15, k=16)) == [5495, 1902, 739, 99, 0, 8455, 8455, 7609]


def test_shift_gelu_golden():
    q = np.array([-127, -60, -20, -1, 0, 1, 20, 60, 127])
    assert list(nl.shift_gelu(q, 0.05, n=23, k=8, row_max=True)) == [0, 0, -420, -62, 0, 66, 2140, 7620, 16002]


def test_isqrt_is_exact():
    edge = np.array([0, 1, 2, 3, 4, 99, 100, 2**31 - 1, 2**32 - 1, 2**40 + 12345])
    assert list(nl.isqrt(edge)) == [math.isqrt(int(v)) for v in edge]
    rng = np.random.default_rng(0)
    n = np.concatenate([rng.integers(0, 2**32, 100000), rng.integers(0, 2**16, 100000)])
    np.testing.assert_array_equal(nl.isqrt(n), [math.isqrt(int(v)) for v in n])


def test_i_exp_golden():
    e, s = nl.i_exp(np.array([0, -100, -347, -1000]), 0.002)
    np.testing.assert_allclose(e * s, [1.0, 0.8205, 0.5000, 0.1353], atol=2e-4)


# -- error bounds against the float ops (bounds from the notes, with headroom) --------------------


@pytest.mark.parametrize("k, n, bound", [(16, 15, 0.03), (8, 16, 0.10)])
@pytest.mark.parametrize("tokens", [16, 128, 197])
@pytest.mark.parametrize("scale", [0.02, 0.05, 0.1])
def test_shiftmax_error_bound(k, n, bound, tokens, scale):
    rng = np.random.default_rng(tokens)
    q = np.clip(np.rint(rng.normal(0, 40, (64, tokens))), -128, 127).astype(np.int64)
    out = nl.shiftmax(q, scale, n=n, k=k)
    assert out.min() >= 0 and out.max() <= 2 ** (k - 1) - 1
    err = np.abs(out / 2 ** (k - 1) - _softmax(q * scale)).max()
    assert err <= bound, err


@pytest.mark.parametrize("tokens", [128, 197, 512])
@pytest.mark.parametrize("scale", [3e-4, 5e-3])  # int32 Q K^T logits straight from the accumulator
def test_shiftmax_on_int32_logits_as_the_recipe_runs_it(tokens, scale):
    """The recipe's Shiftmax: n = 15, 64-bit row sum and normalization, rounded, at the logits'
    own scale (both I0 below 2^16). I-ViT's 32-bit normalization at n = 10 (what fits without
    coarsening) is off by 0.19 on rows of 512."""
    from edgecompile.quant.emit import SHIFTMAX_N, shiftmax_input_scale

    rng = np.random.default_rng(tokens)
    x = rng.normal(0, 2.5, (64, tokens))
    s = shiftmax_input_scale(scale)
    assert s == scale
    q = np.rint(x / s).astype(np.int64)
    out = nl.shiftmax(q, s, n=SHIFTMAX_N, k=8, rounding=True, wide=True)
    assert np.abs(out / 128 - _softmax(q * s)).max() <= 0.025
    narrow = nl.shiftmax(np.rint(x / scale).astype(np.int64), scale, n=10, k=8, zero_below=False)  # I-ViT's
    if tokens == 512 and scale == 3e-4:
        assert np.abs(narrow / 128 - _softmax(np.rint(x / scale) * scale)).max() > 0.1


@pytest.mark.parametrize("scale, bound", [(0.01, 0.04), (0.02, 0.04), (0.05, 0.06)])  # measured 0.035, 0.035, 0.054
def test_shift_tanh_error_bound(scale, bound):
    q = np.arange(-128, 128)
    y = nl.shift_tanh(q, scale)
    assert np.abs(y).max() <= 2**15  # int32 throughout, 16-bit output
    assert np.abs(y / 2**15 - np.tanh(q * scale)).max() <= bound


def test_shiftmax_properties():
    rng = np.random.default_rng(1)
    q = rng.integers(-128, 128, (200, 64))
    out = nl.shiftmax(q, 0.05, n=15, k=16)
    order = np.argsort(q, axis=-1)
    assert np.all(np.diff(np.take_along_axis(out, order, -1), axis=-1) >= 0)  # order-preserving
    np.testing.assert_array_equal(nl.shiftmax(q - 17, 0.05, n=15, k=16), out)  # shift-invariant
    assert np.all(out.sum(axis=-1) <= 2**15)


def test_shiftmax_8bit_rows_of_197_fall_short_unless_rounded():
    q = np.zeros((1, 197), np.int64)  # flat attention: every probability 1/197 = 0.65 LSB of 2^-7
    floor_sum = nl.shiftmax(q, 0.05, n=15, k=8).sum() / 128
    round_sum = nl.shiftmax(q, 0.05, n=15, k=8, rounding=True).sum() / 128
    assert floor_sum < 0.3  # the pitfall: every 0.65-LSB probability floors to 0
    assert abs(round_sum - 1) < abs(floor_sum - 1)


def test_shiftmax_refuses_a_row_sum_beyond_31_bits():
    with pytest.raises(OverflowError, match="lower n"):
        nl.shiftmax(np.zeros((1, 512), np.int64), 0.005, n=16, k=8)  # 512 * 200 * 2^16 > 2^31


def test_wide_shiftmax_takes_any_row_length_and_refuses_a_31_bit_exp():
    """The recipe's form sums in int64: a flat row of 2^20 logits at I0 = 2^14 (a 32-bit sum would
    need 2^49) gives each key its 2^-20 share to the output's step; only an exp past 31 bits is refused."""
    from edgecompile.quant.emit import shiftmax_input_scale

    out = nl.shiftmax(np.zeros((1, 2**20), np.int64), 2**-14, n=15, k=31, rounding=True, wide=True)
    assert np.all(out == 2**30 // 2**20)
    with pytest.raises(OverflowError, match="exp exceeds 31 bits"):
        nl.shiftmax(np.zeros((1, 4), np.int64), 2**-15, n=15, k=8, wide=True)
    assert nl.one_at_scale(shiftmax_input_scale(2**-15)) << 16 < 2**31


@pytest.mark.parametrize("scale, bound", [(0.1, 0.05), (0.05, 0.05), (0.03, 0.05), (0.02, 0.05)])  # measured <= 0.038
def test_shift_gelu_error_bound(scale, bound):
    rng = np.random.default_rng(2)
    q = np.clip(np.rint(rng.normal(0, 40, (32, 768))), -127, 127).astype(np.int64)
    q[:, 0] = 127  # rows reach the top of the range, as a calibrated fc1 output does
    y = nl.shift_gelu(q, scale)
    err = np.abs(y * scale / 128 - _gelu(q * scale)).max()
    assert err <= bound, err


def test_shift_gelu_all_negative_row_stays_in_31_bits():
    q = -np.arange(100, 128, dtype=np.int64)[None]  # x in [-6.4, -5], the notes' 39-bit case
    one = nl.one_at_scale(1.702 * 0.05)
    m = np.maximum(q.max(axis=-1, keepdims=True), 0)
    assert nl.shift_exp(-m, one, 23).max() < 2**31
    y = nl.shift_gelu(q, 0.05, row_max=True)
    assert np.abs(y).max() < 2**31 and np.all(y <= 0)


def test_shift_gelu_row_max_form_breaks_on_wide_rows():
    """I-ViT's row-max form maps a very negative input to x/2 when the row also holds a large
    value; the per-element form (our default) does not."""
    q = np.array([[127, -127]])
    assert nl.shift_gelu(q, 0.1, row_max=True)[0, 1] * 0.1 / 128 < -6
    assert abs(nl.shift_gelu(q, 0.1)[0, 1] * 0.1 / 128) < 0.01


@pytest.mark.parametrize("magnitude, bound", [(30, 0.021), (300, 0.002), (3000, 3e-4)])
def test_i_layernorm_error_bound(magnitude, bound):
    rng = np.random.default_rng(3)
    q = np.rint(rng.normal(0, magnitude, (16, 768))).astype(np.int64)
    out, scale = nl.i_layernorm(q)
    x = q.astype(np.float64)
    ref = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    assert np.abs(out * scale - ref).max() <= bound


def test_i_layernorm_sum_of_squares_beyond_32_bits_is_exact():
    rng = np.random.default_rng(4)
    q = rng.choice([-3000, 3000], (2, 768)).astype(np.int64)
    y = q - (q.sum(-1, keepdims=True) + 384) // 768
    assert (y * y).sum(-1).max() > 2**32  # uint32 would wrap (the notes' pitfall)
    out, scale = nl.i_layernorm(q)
    x = q.astype(np.float64)
    ref = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    assert np.abs(out * scale - ref).max() < 1e-3


def test_i_layernorm_small_variance_and_constant_rows():
    q = np.array([[5, -5, 5, -5, 4, -4, 0, 0], [7, 7, 7, 7, 7, 7, 7, 7]], np.int64)  # var < 2^16
    with np.errstate(all="raise"):
        out, scale = nl.i_layernorm(q)
    x = q[0].astype(np.float64)
    np.testing.assert_allclose(out[0] * scale, (x - x.mean()) / x.std(), atol=0.05)
    assert np.all(out[1] == 0)  # std = 0: zeros, no division by zero


def test_i_layernorm_affine_and_tiny_gamma():
    rng = np.random.default_rng(5)
    q = rng.integers(-300, 300, (4, 64))
    gamma, beta = rng.uniform(0.5, 2, 64), rng.uniform(-1, 1, 64)
    gamma[3] = 0.0  # would make beta / gamma overflow int32
    out, scale = nl.i_layernorm(q, gamma, beta)
    assert np.abs(out).max() < 2**31
    x = q.astype(np.float64)
    ref = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True) * gamma + beta
    keep = np.arange(64) != 3
    assert np.abs((out * scale)[:, keep] - ref[:, keep]).max() < 0.01


def test_i_exp_error_and_int64_width():
    d = -np.arange(0, 5001)  # [-10, 0] at S = 0.002
    e, s = nl.i_exp(d, 0.002)
    assert np.abs(e * s - np.exp(d * 0.002)).max() <= 2.5e-3
    assert e.max() > 2**31  # n = 30 needs int64, as the notes warn


@pytest.mark.parametrize("scale", [0.0005, 0.002, 0.004])  # fine-scale int32 logits up to ~6000 LSB
def test_ibert_softmax_error_bound(scale):
    rng = np.random.default_rng(6)
    q = np.rint(rng.normal(0, 1.5 / scale, (64, 128))).astype(np.int64)
    out = nl.ibert_softmax(q, scale)
    assert out.min() >= 0 and out.max() <= 255
    assert np.abs(out / 256 - _softmax(q * scale)).max() <= 0.006


def test_i_gelu_error_bound_and_widths():
    q = np.arange(-6000, 6001)  # [-6, 6] at S = 1e-3
    y, s = nl.i_gelu(q, 1e-3)
    assert s < 0  # the output scale is negative: compare dequantized values
    assert np.abs(y * s - _gelu(q * 1e-3)).max() <= 0.022
    y4, _ = nl.i_gelu(np.arange(-60000, 60001, 997), 1e-4)
    assert np.abs(y4).max() > 2**32  # the product overflows int32 at fine scales


@pytest.mark.parametrize("impl", ["shiftmax", "ibert"])
def test_masked_keys_add_nothing_to_a_row(impl):
    """A row padded with masked keys (logit + a -2^29 mask, as the recipe adds it in integers)
    gives the unpadded row's probabilities bit for bit, and 0 for the padded keys: what lets a
    ranged artifact pad a sequence without changing the integer-only answer."""
    rng = np.random.default_rng(3)
    q = rng.integers(-3000, 3000, (16, 24)).astype(np.int64)
    padded = np.concatenate([q, rng.integers(-3000, 3000, (16, 40)) - 2**29], axis=1)
    if impl == "shiftmax":
        run = lambda x: nl.shiftmax(x, 0.003, n=15, k=9, rounding=True, wide=True)  # noqa: E731
    else:
        run = lambda x: nl.ibert_softmax(x, 0.003)  # noqa: E731
    out = run(padded)
    np.testing.assert_array_equal(out[:, :24], run(q))
    assert not out[:, 24:].any()
    if impl == "shiftmax":  # I-ViT's capped exp gives every masked key 2^-n of the row sum
        capped = nl.shiftmax(padded, 0.003, n=15, k=9, rounding=True, wide=True, zero_below=False)
        assert not np.array_equal(capped[:, :24], run(q))
