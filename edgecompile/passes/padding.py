"""A zero- (or ``fill``-) padded copy of an NCHW tensor as an opaque kernel of its own: what the
window rewrites (:mod:`~edgecompile.passes.window_taps`, :mod:`~edgecompile.passes.conv_gemm`) read
instead of bounds-checking every tap. Marked opaque so fusion cannot fold the padding's bounds
checks back into every tap of the consumer (which made depthwise taps 3x slower than TVM's form)."""

from __future__ import annotations

from tvm import relax, te

from edgecompile.passes.rewrite import emit_opaque_kernel


def padded_copy(bb: relax.BlockBuilder, x: relax.Expr, shape: list[int], pads: list[int], fill: float = 0.0):
    """``x`` (static NCHW ``shape``) padded by ``pads`` = (top, left, bottom, right) with ``fill``."""
    pt, pl, pb, pr = pads
    n, c, h, w = shape
    out = [n, c, h + pt + pb, w + pl + pr]
    a = te.placeholder(shape, "float32", name="x")
    p = te.compute(
        out,
        lambda b, ch, y, xo: te.if_then_else(
            te.all(y >= pt, y < h + pt, xo >= pl, xo < w + pl),
            a[b, ch, te.max(te.min(y - pt, h - 1), 0), te.max(te.min(xo - pl, w - 1), 0)],
            te.const(fill, "float32"),
        ),
        name="pad",
    )
    return emit_opaque_kernel(bb, x, a, p, "window_pad")
