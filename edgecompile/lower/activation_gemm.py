"""Integer matmuls of two activations on the CPU's dot-product instruction.

Attention's ``Q K^T`` (int8 x int8) and ``P V`` (int16 probabilities x int8 values widened to
int16) have no constant operand for :mod:`edgecompile.lower.pack_weights` to pack at compile
time, so they ran on the generic int32 matmul path: one multiply-add per element, about 60 GOP/s
on a Zen 4 core against the 300+ of the weight GEMMs. Here the right operand is packed at run
time instead, in the same function as the GEMM: ``B[*batch, K, N]`` becomes
``Bp[*batch, N / NR, K / KR, NR, KR]`` (zero-padded to whole panels and groups), ``A`` is
converted with its rows padded to whole register tiles, and the reduction is the
:class:`~edgecompile.lower.schedules.cpu_int8_matmul.Int8Matmul` rule's tensorized kernel:

- int8 x int8 with VNNI: ``vpdpbusd`` (4 products a step), on ``A + 128``; ``128 * colsum(B)``,
  summed by a small kernel of its own before the GEMM, is subtracted in the epilogue.
- otherwise (``P V``; ``Q K^T`` without VNNI) the int16 step of
  :func:`~edgecompile.lower.schedules.int8_dot.int16_kernel`: ``vpdpwssd`` with VNNI,
  ``vpmaddwd`` without.

Exact: the same int32 sums as the generic path. Real all-MiniLM-L6-v2, default int8, 256 tokens,
Zen 4, per layer: ``Q K^T`` 780 us generic, 398 on int16 steps, 285 on ``vpdpbusd`` (+4 us for
the column sums); ``P V`` 738 -> 267 us. ARM has no int16 dot product (``sdot`` is int8): there
these matmuls keep the generic path (``sdot`` for ``Q K^T`` is not built).
"""

from __future__ import annotations

from tvm import relax, te, tirx

from edgecompile.ir.ops import static_shape
from edgecompile.lower.dot_operands import converted_a
from edgecompile.lower.schedules.int8_dot import (
    B_PACK,
    INT8_GEMM_ATTR,
    INT8_MR_ATTR,
    Int8Kernel,
    int8_kernel,
    int16_kernel,
)
from edgecompile.lower.schedules.isa import VectorISA
from edgecompile.lower.schedules.tiles import dot_gemm_mr, least_padded


def _tile_width(kernel: Int8Kernel, isa: VectorISA, n: int) -> int:
    """Columns per register tile: the least padded work over whole vectors (a one-vector tile counted
    slower), as for the fp32 GEMMs; ``vpmaddwd`` needs a scratch register per product, so with 16
    registers at most 2 vectors."""
    widest = (2 if not kernel.in_place else 3) if isa.registers <= 16 else 4
    return least_padded([v * kernel.lanes for v in range(widest, 0, -1)], n, kernel.lanes)


def activation_gemm(x, y, *comp, kernel: Int8Kernel, mr: int, nr: int):
    """TE: ``x[*batch, M, K] @ y[*batch, K, N]`` -> int32, ``y`` packed at run time (module doc);
    ``comp``: with ``vpdpbusd``, ``128 * colsum(y)`` (:func:`_offset_colsum`), subtracted."""
    *batch, m, k_dim = (int(d) for d in x.shape)
    n = int(y.shape[-1])
    kr = kernel.kr
    kb, nb = -(-k_dim // kr), -(-n // nr)
    a = converted_a(x, kernel, mr, kb * kr)  # vpdpbusd: A + 128, compensated by comp below

    def pack(*idx):
        *b, jo, ko, ji, ki = idx
        j, k = jo * nr + ji, ko * kr + ki
        v = y[(*b, tirx.min(k, k_dim - 1), tirx.min(j, n - 1))].astype(kernel.b_dtype)
        return tirx.if_then_else(tirx.all(j < n, k < k_dim), v, tirx.const(0, kernel.b_dtype))

    bp = te.compute((*batch, nb, kb, nr, kr), pack, name=B_PACK)
    ko = te.reduce_axis((0, kb), name="ko")
    kk = te.reduce_axis((0, kr), name="kk")

    def dot(*idx):
        *b, i, j = idx
        lhs = a[(*b, i, ko * kr + kk)].astype("int32")
        return te.sum(lhs * bp[(*b, j // nr, ko, j % nr, kk)].astype("int32"), axis=[ko, kk])

    attrs = {INT8_GEMM_ATTR: kernel.intrin, INT8_MR_ATTR: mr}
    acc = te.compute((*batch, a.shape[-2], nb * nr), dot, name="int8_gemm", attrs=attrs)
    if not comp:
        return te.compute((*batch, m, n), lambda *idx: acc[idx], name="int8_gemm_out")
    (cs,) = comp
    return te.compute((*batch, m, n), lambda *idx: acc[idx] - cs[(*idx[:-2], 0, idx[-1])], name="int8_gemm_out")


def _offset_colsum(y, offset: int):
    """TE: ``offset * sum_k y[..., k, j]`` as ``[*batch, 1, N]`` int32: what ``A + offset`` adds to a
    product with ``y`` (its own kernel: a column reduction, before the GEMM)."""
    *batch, k_dim, n = (int(d) for d in y.shape)
    k = te.reduce_axis((0, k_dim), name="k")
    total = te.compute((*batch, 1, n), lambda *i: te.sum(y[(*i[:-2], k, i[-1])].astype("int32"), axis=k), name="colsum")
    return te.compute((*batch, 1, n), lambda *i: total[i] * offset, name="colsum_offset")


def pack_activation_matmul(bb: relax.BlockBuilder, x: relax.Expr, y: relax.Expr, isa: VectorISA):
    """``matmul(x, y, out_dtype="int32")`` of two int8/int16 activations of static shapes with the
    same batch as a call of :func:`activation_gemm`, or None where it does not apply (another
    dtype, a symbolic or broadcast shape, a CPU without an int16 dot-product step)."""
    kinds = (str(x.ty.dtype), str(y.ty.dtype))
    if not all(k in ("int8", "int16") for k in kinds):
        return None
    xs, ys = static_shape(x), static_shape(y)
    if xs is None or ys is None or len(xs) != len(ys) or len(xs) < 2 or xs[:-2] != ys[:-2] or xs[-1] != ys[-2]:
        return None
    # int8 x int8 on VNNI: vpdpbusd, 4 products a step (with the run-time column sum); else int16 steps
    vnni = int8_kernel(isa) if kinds == ("int8", "int8") and isa.int8_dot == "vnni" else None
    kernel = vnni or int16_kernel(isa)
    n = ys[-1]
    if kernel is None or n < kernel.lanes:
        return None
    nr = _tile_width(kernel, isa, n)
    mr = dot_gemm_mr(isa, xs[-2], nr)

    def gemm(a, b, *comp):
        return activation_gemm(a, b, *comp, kernel=kernel, mr=mr, nr=nr)

    if not kernel.a_offset:
        return bb.call_te(gemm, x, y, primfunc_name_hint="int16_gemm")
    comp = bb.emit(bb.call_te(_offset_colsum, y, kernel.a_offset, primfunc_name_hint="colsum"))
    return bb.call_te(gemm, x, y, comp, primfunc_name_hint="int8_act_gemm")
