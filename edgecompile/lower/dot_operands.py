"""The left operand of a dot-product GEMM as its tensorized step reads it, shared by the weight GEMMs
(:mod:`edgecompile.lower.pack_weights`) and the activation GEMMs
(:mod:`edgecompile.lower.activation_gemm`)."""

from __future__ import annotations

from tvm import te, tirx

from edgecompile.lower.schedules.bf16_pairs import pair_bits
from edgecompile.lower.schedules.int8_dot import A_PREP, Int8Kernel


def converted_a(x, kernel: Int8Kernel, mr: int, kp):
    """TE ``A_prep``: ``x[*batch, M, K]`` in the step's operand type, ``+ a_offset`` where the step
    needs unsigned A (``vpdpbusd``: compensated by the caller), rows padded to whole tiles of ``mr``
    and K to ``kp``, the padding zeros (``M`` may be symbolic)."""
    *batch, m, k_dim = x.shape
    mp = tirx.indexdiv(m + mr - 1, mr) * mr

    def prep(*idx):
        *b, i, k = idx
        v = x[(*b, tirx.min(i, m - 1), tirx.min(k, k_dim - 1))]
        if kernel.a_offset:
            v = v.astype("int16") + kernel.a_offset
        inside = tirx.all(i < m, k < k_dim)
        return tirx.if_then_else(inside, v.astype(kernel.a_dtype), tirx.const(0, kernel.a_dtype))

    return te.compute((*batch, mp, kp), prep, name=A_PREP)


def paired_a(x, mr: int):
    """TE ``A_prep`` of a bf16-pairs GEMM (:mod:`edgecompile.lower.schedules.bf16_pairs`): word ``w``
    of a row holds ``(bf16(x[2w]), bf16(x[2w + 1]))`` (K even); the rows padded to whole tiles of
    ``mr`` repeat the last row (their products are computed and never stored), so every row is
    a whole number of the packing step's 32-float groups with no zero to select."""
    *batch, m, k_dim = x.shape
    mp = tirx.indexdiv(m + mr - 1, mr) * mr

    def prep(*idx):
        *b, i, w = idx
        row = tirx.min(i, m - 1)
        return pair_bits(x[(*b, row, w * 2)], x[(*b, row, w * 2 + 1)])

    return te.compute((*batch, mp, k_dim // 2), prep, name=A_PREP)
