"""The Relax emitters of the integer-only ops compile to exactly what the numpy references
compute, on dense sweeps of inputs (every int8 value, rows of realistic lengths)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from edgecompile.intref import nonlinear as nl
from edgecompile.lower.build import compile_module
from edgecompile.quant.emit import emit_shift_gelu, emit_shiftmax, shiftmax_n
from edgecompile.targets import get_profile

HOST = get_profile("native").resolved()


def _run(shape, dtype, emit, x):
    bb = relax.BlockBuilder()
    v = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [v]):
        with bb.dataflow():
            out = bb.emit_output(emit(bb, v))
        bb.emit_func_output(out)
    vm = relax.VirtualMachine(compile_module(bb.get(), HOST), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize(
    "tokens, scale, k, rounding", [(16, 0.1, 8, False), (128, 0.05, 8, True), (197, 0.02, 16, False)]
)
def test_shiftmax_compiled_equals_reference(tokens, scale, k, rounding):
    rng = np.random.default_rng(tokens)
    q = np.clip(np.rint(rng.normal(0, 40, (2, 12, 32, tokens))), -128, 127).astype(np.int8)
    q[0, 0, 0] = 127  # a peaked row
    q[0, 0, 1] = -128  # a flat row at the bottom
    n = shiftmax_n(tokens, scale)
    got = _run(q.shape, "int8", lambda bb, v: emit_shiftmax(v, scale, n, k, rounding), q)
    np.testing.assert_array_equal(got, nl.shiftmax(q, scale, n=n, k=k, rounding=rounding))


def test_shiftmax_n_keeps_the_row_sum_in_31_bits():
    assert shiftmax_n(16, 0.1) == 15
    n = shiftmax_n(512, 0.005)  # I0 = 200: 15 would overflow
    assert 512 * 200 * 2**n < 2**31 <= 512 * 200 * 2 ** (n + 1)


@pytest.mark.parametrize("scale", [0.02, 0.05, 0.1])
def test_shift_gelu_compiled_equals_reference_for_every_int8(scale):
    q = np.tile(np.arange(-128, 128, dtype=np.int8), (3, 1))
    got = _run(q.shape, "int8", lambda bb, v: emit_shift_gelu(v, scale)[0], q)
    np.testing.assert_array_equal(got, nl.shift_gelu(q, scale))


@pytest.mark.parametrize("magnitude", [3, 300, 20000])  # var < 2^16, typical, int16 extremes
def test_i_layernorm_compiled_equals_reference(magnitude):
    from edgecompile.quant.emit import emit_i_layernorm

    rng = np.random.default_rng(magnitude)
    q = np.clip(np.rint(rng.normal(0, magnitude, (2, 16, 192))), -32768, 32767).astype(np.int16)
    q[0, 0] = 7  # a constant row
    got = _run(q.shape, "int16", lambda bb, v: emit_i_layernorm(bb, v, 192)[0], q)
    ref, _ = nl.i_layernorm(q)
    np.testing.assert_array_equal(got, ref)


def test_shiftmax_of_int32_logits_with_an_attention_mask_equals_reference():
    """Scores straight from the int32 accumulator (scale ~3e-4, I0 ~ 3000) with -10000 masked keys."""
    scale, tokens = 3e-4, 128
    rng = np.random.default_rng(3)
    q = np.rint(rng.normal(0, 4 / scale, (1, 4, 8, tokens))).astype(np.int32)
    q[..., 100:] -= np.int32(10000 / scale)  # padded keys
    q[0, 0, 0] = -(2**31) + 5  # an extreme value must not overflow the exp's multiply
    n = shiftmax_n(tokens, scale)
    for wide in (False, True):
        got = _run(q.shape, "int32", lambda bb, v, w=wide: emit_shiftmax(v, scale, n, 8, True, w), q)
        ref = nl.shiftmax(q, scale, n=n, k=8, rounding=True, wide=wide)
        np.testing.assert_array_equal(got, ref)
    assert ref[0, 1, :, 100:].max() == 0 and ref[0, 1].sum(-1).min() >= 120


def test_wide_shiftmax_compiled_equals_reference_at_the_finest_scale_it_takes():
    """The recipe's form at the finest logit scale shiftmax_input_scale keeps (I0 = 32767: the
    exp's int32 intermediate at its bound) on a row of 300 with masked keys: bit for bit."""
    from edgecompile.quant.emit import SHIFTMAX_N, shiftmax_input_scale

    scale = shiftmax_input_scale(1e-7)
    assert scale > 1e-7 and shiftmax_input_scale(scale) == scale
    rng = np.random.default_rng(9)
    q = np.rint(rng.normal(0, 3 / scale, (2, 3, 5, 300))).astype(np.int32)
    q[..., 250:] -= np.int32(2**29)
    q[0, 0, 0] = 0  # a flat row: every exp at its largest
    got = _run(q.shape, "int32", lambda bb, v: emit_shiftmax(v, scale, SHIFTMAX_N, 16, True, True), q)
    np.testing.assert_array_equal(got, nl.shiftmax(q, scale, n=SHIFTMAX_N, k=16, rounding=True, wide=True))


@pytest.mark.parametrize("scale", [2e-3, 2**-13])
def test_ibert_softmax_compiled_equals_reference(scale):
    from edgecompile.quant.emit import emit_ibert_softmax

    rng = np.random.default_rng(5)
    q = np.rint(rng.normal(0, 3 / scale, (2, 4, 16, 64))).astype(np.int32)
    q[..., 40:] -= np.int32(30 / scale)
    got = _run(q.shape, "int32", lambda bb, v: emit_ibert_softmax(v, scale, k=7), q)
    np.testing.assert_array_equal(got, nl.ibert_softmax(q, scale, k=7))


@pytest.mark.parametrize("scale", [1e-3, 2e-4])
def test_i_gelu_compiled_equals_reference(scale):
    from edgecompile.quant.emit import emit_i_gelu

    q = np.arange(-int(6 / scale), int(6 / scale), 7, dtype=np.int32)[None]
    got = _run(q.shape, "int32", lambda bb, v: emit_i_gelu(v, scale)[0], q)
    np.testing.assert_array_equal(got, nl.i_gelu(q, scale)[0])


@pytest.mark.parametrize("scale", [0.01, 0.05])
def test_shift_tanh_compiled_equals_reference_for_every_int8(scale):
    from edgecompile.quant.emit import emit_shift_tanh

    q = np.arange(-128, 128, dtype=np.int8)[None]
    got = _run(q.shape, "int8", lambda bb, v: emit_shift_tanh(v, scale)[0], q)
    np.testing.assert_array_equal(got, nl.shift_tanh(q, scale))


def test_compiled_isqrt_and_layernorm_factor_are_exact():
    from edgecompile.quant.emit import emit_isqrt

    rng = np.random.default_rng(9)
    squares = np.arange(1, 2000, dtype=np.int64) ** 2
    n = np.concatenate(
        [
            [0, 1, 2, 3, 4, 255, 256, 65535, 65536, 2**31 - 1, 2**32, 2**62 - 1],
            squares - 1,
            squares,
            rng.integers(0, 2**62, 4000, dtype=np.int64),
            rng.integers(0, 2**20, 4000, dtype=np.int64),
        ]
    ).astype(np.int64)
    got = _run(n.shape, "int64", lambda bb, v: emit_isqrt(bb, v), n)
    np.testing.assert_array_equal(got, nl.isqrt(n))
    factor = _run(n.shape, "int64", lambda bb, v: emit_isqrt(bb, v, factor=True), n)
    root = nl.isqrt(n)
    np.testing.assert_array_equal(factor, np.where(root > 0, (nl.INT31 << 8) // np.maximum(root, 1), 0))
