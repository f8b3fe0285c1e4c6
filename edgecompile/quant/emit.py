"""Relax emitters of the integer-only ops: softmax, GELU, tanh and LayerNorm with the same
arithmetic as :mod:`edgecompile.intref.nonlinear`, in int32, so compiled code equals the numpy
reference bit for bit (tests/unit/quant/test_integer_ops.py), and the kernels of their own they
need (per-row divisions, the integer square root, the quantize of a float input).

Each emitter takes an integer tensor and the float scale it stands for, and returns an int32
Relax expression with its own scale. Constants (``I0``, shift counts) are chosen here, once, from
the scales; :func:`shiftmax_n` lowers ``n`` for long rows so I-ViT's 32-bit row sum stays in 31
bits, and :func:`shiftmax_input_scale` keeps the recipe's (64-bit) form's exps in 31 bits.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax

from edgecompile.intref.nonlinear import ERF_A, ERF_B, EXP_A, EXP_B, EXP_C, INT31, WIDE_P, one_at_scale
from edgecompile.ir.attrs import QUANTIZE_ATTR, ROW_DIVIDE_ATTR
from edgecompile.passes.rewrite import emit_opaque_kernel

op = relax.op


def _c(v) -> relax.Expr:
    return relax.const(np.int32(v), "int32")


def shiftmax_n(row: int, scale: float, n: int = 15) -> int:
    """The largest ``n' <= n`` with ``row * I0 * 2^n' < 2^31`` (the Shiftmax row-sum bound)."""
    one = one_at_scale(scale)
    while n > 0 and row * one * (1 << n) >= 2**31:
        n -= 1
    if n == 0:
        raise ValueError(f"Shiftmax cannot fit a row of {row} at scale {scale:g} in 31 bits")
    return n


SHIFTMAX_N = 15  # I-ViT's: exps floor at 2^-15, so long rows do not pile up floored mass


def shiftmax_input_scale(scale: float, n: int = SHIFTMAX_N) -> float:
    """The logit scale the recipe's (``wide``, 64-bit row sum) Shiftmax works at: ``scale``
    itself, or a coarser one (``1 / I0``) when the exp's ``2 I0 2^n`` would pass 2^31 (``I0`` up to
    32767 at ``n = 15``; int32 logits straight from ``Q K^T`` have ``I0`` in the thousands). The row
    length plays no part (:func:`edgecompile.intref.nonlinear.shiftmax`)."""
    if one_at_scale(scale) * 2 ** (n + 1) < 2**31:
        return scale
    return 1.0 / (2**31 // 2 ** (n + 1) - 1)


def _shift_exp(d: relax.Expr, one: int, n: int, zero_below: bool = False) -> relax.Expr:
    """:func:`edgecompile.intref.nonlinear.shift_exp` on an int32 ``d <= 0``."""
    d = op.maximum(d, _c(-n * one))
    scaled = op.subtract(op.add(d, op.right_shift(d, _c(1))), op.right_shift(d, _c(4)))
    d = op.maximum(scaled, _c(-n * one))
    q = op.floor_divide(d, _c(-one))
    r = op.add(d, op.multiply(q, _c(one)))
    e = op.right_shift(op.left_shift(op.add(r, _c(2 * one)), op.subtract(_c(n), q)), _c(1))
    return op.where(op.less(scaled, _c(-n * one)), _c(0), e) if zero_below else e


def _reciprocal(bb, numerator: int, total: relax.Expr, dtype: str) -> relax.Expr:
    """``numerator // total`` per row: its own kernel when a BlockBuilder is given."""
    if bb is None:
        return op.floor_divide(relax.const(np.array(numerator, dtype), dtype), total)
    return emit_row_divide(bb, bb.emit(total), numerator=numerator)


def emit_shiftmax(
    q: relax.Expr,
    scale: float,
    n: int,
    k: int = 8,
    rounding: bool = False,
    wide: bool = False,
    bb: relax.BlockBuilder | None = None,
) -> relax.Expr:
    """Softmax over the last axis of integer logits: int32 in ``[0, 2^(k-1) - 1]`` at scale
    ``2^-(k-1)`` (see :func:`edgecompile.intref.nonlinear.shiftmax`; ``n`` from
    :func:`shiftmax_n`). Rounding is ``((e f) >> (31 - k) + 1) >> 1``, equal to the reference's
    ``(e f + 2^(31-k)) >> (32 - k)`` without its int32 overflow."""
    one = one_at_scale(scale)
    q32 = op.astype(q, "int32")
    e = _shift_exp(op.subtract(q32, op.max(q32, axis=-1, keepdims=True)), one, n, zero_below=True)
    if wide:  # int64 sum and normalization: F = 2^62 // sum, no bound on the row length
        e64 = op.astype(e, "int64")
        total = op.sum(e64, axis=-1, keepdims=True)
        x = op.multiply(e64, _reciprocal(bb, 1 << WIDE_P, total, "int64"))
        shift = WIDE_P + 1 - k
        if rounding:
            x = op.add(x, _c64(1 << (shift - 1)))
        return op.astype(op.minimum(op.right_shift(x, _c64(shift)), _c64((1 << (k - 1)) - 1)), "int32")
    f = op.floor_divide(_c(INT31), op.sum(e, axis=-1, keepdims=True))
    x = op.multiply(e, f)
    if rounding:
        out = op.right_shift(op.add(op.right_shift(x, _c(31 - k)), _c(1)), _c(1))
    else:
        out = op.right_shift(x, _c(32 - k))
    return op.minimum(out, _c((1 << (k - 1)) - 1))


def emit_shift_gelu(q: relax.Expr, scale: float, k: int = 8) -> tuple[relax.Expr, float]:
    """GELU of integers at ``scale``: ``(y, scale / 2^(k-1))``, the per-element form of
    :func:`edgecompile.intref.nonlinear.shift_gelu` (int32 throughout)."""
    q32 = op.astype(q, "int32")
    return op.multiply(q32, emit_shift_sigmoid(q32, one_at_scale(1.702 * scale), k)), scale / (1 << (k - 1))


def emit_shift_sigmoid(q32: relax.Expr, one: int, k: int = 8) -> relax.Expr:
    """:func:`edgecompile.intref.nonlinear.shift_sigmoid` of an int32 tensor (int32 throughout)."""
    n = 30 - (k - 1) - one.bit_length()
    p = _shift_exp(op.negative(op.abs(q32)), one, n)
    full = _c(one << n)
    num = op.where(op.greater_equal(q32, _c(0)), full, p)
    den = op.add(full, p)
    return op.floor_divide(op.add(op.left_shift(num, _c(k - 1)), op.right_shift(den, _c(1))), den)


def emit_shift_tanh(q: relax.Expr, scale: float, k: int = 16) -> tuple[relax.Expr, float]:
    """:func:`edgecompile.intref.nonlinear.shift_tanh`: ``(y, 2^-(k-1))``, int32."""
    sigma = emit_shift_sigmoid(op.astype(q, "int32"), one_at_scale(2 * scale), k)
    return op.subtract(op.multiply(sigma, _c(2)), _c(1 << (k - 1))), 1.0 / (1 << (k - 1))


def _bit_length(x: relax.Expr) -> relax.Expr:
    """Bits of a non-negative int64 tensor, as :func:`edgecompile.intref.nonlinear.bit_length`."""
    powers = relax.const(np.int64(1) << np.arange(63, dtype=np.int64), "int64")
    return op.sum(op.astype(op.greater_equal(op.expand_dims(x, -1), powers), "int64"), axis=-1)


def emit_ibert_softmax(
    q: relax.Expr, scale: float, k: int = 7, n: int = 30, bb: relax.BlockBuilder | None = None
) -> relax.Expr:
    """:func:`edgecompile.intref.nonlinear.ibert_softmax` over the last axis: int64 inside
    (i-exp reaches ~2^54), ``[0, 2^k - 1]`` at scale ``2^-k`` out, int32."""
    ln2 = int(math.floor(-math.log(2) / scale))
    b_int = int(math.floor(EXP_B / EXP_A / scale))
    c_int = int(math.floor(EXP_C / EXP_A / scale**2))
    x = op.astype(q, "int64")
    d = op.maximum(op.subtract(x, op.max(x, axis=-1, keepdims=True)), _c64(n * ln2))
    z = op.floor_divide(d, _c64(ln2))
    r = op.subtract(d, op.multiply(z, _c64(ln2)))
    poly = op.add(op.multiply(r, op.add(r, _c64(b_int))), _c64(c_int))
    e = op.maximum(op.left_shift(poly, op.subtract(_c64(n), z)), _c64(0))
    s = op.maximum(op.subtract(_bit_length(op.max(e, axis=-1, keepdims=True)), _c64(15)), _c64(0))
    half = op.where(
        op.greater(s, _c64(0)), op.left_shift(_c64(1), op.maximum(op.subtract(s, _c64(1)), _c64(0))), _c64(0)
    )
    e16 = op.right_shift(op.add(e, half), s)
    f = _reciprocal(bb, 2**32, op.maximum(op.sum(e16, axis=-1, keepdims=True), _c64(1)), "int64")
    out = op.right_shift(op.add(op.multiply(e16, f), _c64(1 << (31 - k))), _c64(32 - k))
    return op.astype(op.minimum(out, _c64(2**k - 1)), "int32")


def _i_gelu_constants(scale: float) -> tuple[int, int, int, float]:
    se = scale / math.sqrt(2)
    s_erf = ERF_A * se**2
    return int(math.floor(ERF_B / se)), int(math.floor(1.0 / ERF_A / se**2)), int(math.floor(1.0 / s_erf)), s_erf


def i_gelu_bound(scale: float, qmax: int) -> int:
    """The largest ``|y|`` of :func:`emit_i_gelu` for ``|q| <= qmax``: ``qmax (B^2 + |C| + |one|)``."""
    b_int, c_int, one, _ = _i_gelu_constants(scale)
    return qmax * (b_int**2 + abs(c_int) + abs(one))


def emit_i_gelu(q: relax.Expr, scale: float) -> tuple[relax.Expr, float]:
    """:func:`edgecompile.intref.nonlinear.i_gelu`: ``(y, scale_y)``, int64."""
    b_int, c_int, one, s_erf = _i_gelu_constants(scale)
    x = op.astype(q, "int64")
    u = op.add(op.minimum(op.abs(x), _c64(-b_int)), _c64(b_int))
    poly = op.multiply(op.sign(x), op.add(op.multiply(u, u), _c64(c_int)))
    return op.multiply(x, op.add(poly, _c64(one))), scale * s_erf / 2


ISQRT_STEPS = 8  # Newton from 2^ceil(bits/2) (< 2 sqrt(n)): relative error squares each step, exact in 7


def _c64(v) -> relax.Expr:
    return relax.const(np.int64(v), "int64")


def _isqrt_kernel(rows: int, factor: bool):
    """A TIR kernel over ``rows`` int64 values ``n`` in ``[0, 2^62)``: exact ``floor(sqrt(n))``, or
    with ``factor`` I-LayerNorm's ``(2^31 - 1) * 2^8 // floor(sqrt(n))`` (0 for n = 0), so the
    per-row divisions run once per row, not once per element of a fused consumer."""
    from tvm.script import tirx as T

    top = (INT31 << 8) if factor else 1

    @T.prim_func(private=True, s_tir=True)
    def isqrt(n: T.Buffer((rows,), "int64"), out: T.Buffer((rows,), "int64")):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for i in T.parallel(rows):
            with T.sblock("isqrt"):
                vi = T.axis.spatial(rows, i)
                T.reads(n[vi])
                T.writes(out[vi])
                bits = T.sblock_alloc_buffer((1,), "int64", scope="local")
                x = T.sblock_alloc_buffer((1,), "int64", scope="local")
                bits[0] = T.int64(0)
                for b in range(63):  # the bit length of n, without a division
                    bits[0] = bits[0] + T.Cast("int64", n[vi] >= T.shift_left(T.int64(1), T.Cast("int64", b)))
                x[0] = T.shift_left(T.int64(1), T.floordiv(bits[0] + T.int64(1), T.int64(2)))
                for _ in range(ISQRT_STEPS):
                    x[0] = T.max(T.min(x[0], T.floordiv(x[0] + T.floordiv(n[vi], x[0]), T.int64(2))), T.int64(1))
                root = T.if_then_else(T.bool(factor), T.floordiv(T.int64(top), x[0]), x[0])
                out[vi] = T.if_then_else(n[vi] > T.int64(0), root, T.int64(0))

    return isqrt


def emit_isqrt(bb: relax.BlockBuilder, n: relax.Expr, factor: bool = False) -> relax.Expr:
    """``floor(sqrt(n))`` of an int64 tensor ``0 <= n < 2^62`` (static shape), or with ``factor``
    I-LayerNorm's ``((2^31 - 1) << 8) // floor(sqrt(n))``: Newton's iteration from
    ``2^ceil(bits(n) / 2)``, kept from rising (``x = min(x, (x + n // x) // 2)``), a fixed
    :data:`ISQRT_STEPS` steps, in a loop of its own (as Relax ops, each step would be inlined into
    the next and the expression would double per step); exact, as
    :func:`edgecompile.intref.nonlinear.isqrt`."""
    shape = [int(d) for d in bb.normalize(n).ty.shape.values]
    rows = int(np.prod(shape))
    name = f"{'ilnorm_factor' if factor else 'isqrt'}_i64_{rows}"
    gv = bb.add_func(_isqrt_kernel(rows, factor), name)
    flat = bb.emit(op.reshape(n, [rows]))
    root = bb.emit(relax.call_tir(gv, [flat], relax.TensorType([rows], "int64")))
    return op.reshape(root, shape)


def emit_i_layernorm(bb: relax.BlockBuilder, q: relax.Expr, channels: int) -> tuple[relax.Expr, float]:
    """I-LayerNorm without the affine part (see :func:`edgecompile.intref.nonlinear.i_layernorm`):
    ``(out, sqrt(C) / 2^30)``. Mean and centring in int32 (``|q| < 2^16``, ``C <= 2^14``), the sum
    of squares, square root and ``y * f`` in int64, int32 out; the per-row factor is computed once
    per row (:func:`emit_isqrt`)."""
    x = op.astype(q, "int32")
    total = bb.emit(op.sum(x, axis=-1, keepdims=True))
    mu = emit_row_divide(bb, total, add=channels // 2, divisor=channels)
    y = bb.emit(op.subtract(x, mu))
    y64 = op.astype(y, "int64")
    var = bb.emit(op.left_shift(op.sum(op.multiply(y64, y64), axis=-1, keepdims=True), _c64(16)))
    f = bb.emit(emit_isqrt(bb, var, factor=True))
    out = op.right_shift(op.multiply(y64, f), _c64(1))
    return op.astype(out, "int32"), float(np.sqrt(channels) / 2**30)


def emit_input_quantize(bb: relax.BlockBuilder, x: relax.Expr, inv_scale: float, limit: int) -> relax.Expr:
    """``clip(rint(x * float32(inv_scale)), -limit, limit)`` as int32, in a kernel marked opaque
    so fusion keeps it apart: the float arithmetic on model inputs stays out of integer kernels."""
    from tvm import te

    ty = bb.normalize(x).ty
    shape = [int(d) for d in ty.shape.values]
    inv = np.float32(inv_scale)
    a = te.placeholder(shape, "float32", name="x")
    q = te.compute(
        shape,
        lambda *i: te.max(te.min(te.nearbyint(a(*i) * te.const(inv, "float32")), float(limit)), float(-limit)).astype(
            "int32"
        ),
        name="quantize",
    )
    return emit_opaque_kernel(bb, x, a, q, "quantize_input", {QUANTIZE_ATTR: [float(inv), int(limit)]})


def emit_row_divide(
    bb: relax.BlockBuilder, x: relax.Expr, numerator: int | None = None, add: int = 0, divisor: int | None = None
) -> relax.Expr:
    """A per-row integer division in a kernel of its own: ``numerator // max(x, 1)`` or
    ``(x + add) // divisor`` (floor), same dtype as ``x``. Fused into the elementwise kernel that
    reads it, the division would run once per element (the row index is not loop-invariant once
    the loops are fused for vectorization), and integer division does not vectorize on x86."""
    from tvm import te, tirx

    ty = bb.normalize(x).ty
    shape, dtype = [int(d) for d in ty.shape.values], str(ty.dtype)
    a = te.placeholder(shape, dtype, name="x")
    if numerator is not None:
        body = lambda *i: tirx.floordiv(tirx.const(numerator, dtype), te.max(a(*i), tirx.const(1, dtype)))  # noqa: E731
    else:
        body = lambda *i: tirx.floordiv(a(*i) + tirx.const(add, dtype), tirx.const(divisor, dtype))  # noqa: E731
    out = te.compute(shape, body, name="row_divide")
    attr = [-1 if numerator is None else int(numerator), int(add), -1 if divisor is None else int(divisor)]
    return emit_opaque_kernel(bb, x, a, out, "row_divide", {ROW_DIVIDE_ATTR: attr})
