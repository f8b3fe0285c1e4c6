"""The left operand of a dot-product GEMM as its tensorized step reads it, shared by the weight GEMMs
(:mod:`edgecompile.lower.pack_weights`) and the activation GEMMs
(:mod:`edgecompile.lower.activation_gemm`)."""

from __future__ import annotations

from tvm import te, tirx

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
