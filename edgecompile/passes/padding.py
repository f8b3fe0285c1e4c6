"""A zero- (or ``fill``-) padded copy of an NCHW tensor as an opaque kernel of its own: what the
window rewrites (:mod:`~edgecompile.passes.window_taps`, :mod:`~edgecompile.passes.conv_gemm`) read
instead of bounds-checking every tap. Marked opaque so fusion cannot fold the padding's bounds
checks back into every tap of the consumer (which made depthwise taps 3x slower than TVM's form)."""

from __future__ import annotations

from tvm import relax, te

from edgecompile.passes.rewrite import emit_opaque_kernel


def padded_copy(
    bb: relax.BlockBuilder, x: relax.Expr, shape: list[int], pads: list[int], fill: float = 0.0, layout: str = "NCHW"
):
    """``x`` (static ``shape`` in ``layout``, NCHW or NHWC) padded by ``pads`` = (top, left,
    bottom, right) with ``fill``. An NHWC copy is made even without padding: the channels-last
    taps then read a buffer of their own, not a transpose inlined into every tap (a gather per
    element)."""
    pt, pl, pb, pr = pads
    hx, wx = (2, 3) if layout == "NCHW" else (1, 2)
    h, w = shape[hx], shape[wx]
    out = list(shape)
    out[hx], out[wx] = h + pt + pb, w + pl + pr
    a = te.placeholder(shape, "float32", name="x")

    def value(*idx):
        y, xo = idx[hx], idx[wx]
        src = list(idx)
        src[hx], src[wx] = te.max(te.min(y - pt, h - 1), 0), te.max(te.min(xo - pl, w - 1), 0)
        return te.if_then_else(te.all(y >= pt, y < h + pt, xo >= pl, xo < w + pl), a[tuple(src)],
                               te.const(fill, "float32"))  # fmt: skip

    p = te.compute(out, value, name="pad")
    return emit_opaque_kernel(bb, x, a, p, "window_pad" if layout == "NCHW" else "window_pad_nhwc")


SPLIT_LANES = 8  # floats per vector of the column-phase split (every target's vectors hold 4 to 16)


def _phase_split_kernel(n: int, c: int, h: int, half: int):
    """``out[b, ch, y, p, q] = x[b, ch, y, 2 q + p]`` for ``x[n, c, h, 2 half]``: two contiguous
    vector loads deinterleaved by shuffles per ``SPLIT_LANES`` outputs of each phase, a scalar
    tail. NCHW in and out (a reshape around it, inlined into the taps, cost the schedule seconds of
    index simplification per kernel)."""
    from tvm.script import tirx as T

    v = SPLIT_LANES
    whole = half // v * v
    even, odd = list(range(0, 2 * v, 2)), list(range(1, 2 * v, 2))

    @T.prim_func(private=True, s_tir=True)
    def split(x: T.Buffer((n, c, h, 2 * half), "float32"), out: T.Buffer((n, c, h, 2, half), "float32")):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for r in T.parallel(n * c * h):
            with T.sblock("split"):
                b = T.axis.spatial(n, r // (c * h))
                ch = T.axis.spatial(c, r // h % c)
                y = T.axis.spatial(h, r % h)
                T.reads(x[b, ch, y, 0 : 2 * half])
                T.writes(out[b, ch, y, 0:2, 0:half])
                for j in range(whole // v):
                    out[b, ch, y, 0, T.ramp(j * v, 1, v)] = T.Shuffle(
                        [x[b, ch, y, T.ramp(2 * v * j, 1, v)], x[b, ch, y, T.ramp(2 * v * j + v, 1, v)]], even
                    )
                    out[b, ch, y, 1, T.ramp(j * v, 1, v)] = T.Shuffle(
                        [x[b, ch, y, T.ramp(2 * v * j, 1, v)], x[b, ch, y, T.ramp(2 * v * j + v, 1, v)]], odd
                    )
                for t in range(whole, half):
                    out[b, ch, y, 0, t] = x[b, ch, y, 2 * t]
                    out[b, ch, y, 1, t] = x[b, ch, y, 2 * t + 1]

    return split


def column_phases(bb: relax.BlockBuilder, x: relax.Expr, shape: list[int], pads: list[int], fill: float = 0.0):
    """``x`` padded as :func:`padded_copy` (and by one more ``fill`` column where the padded width is
    odd), its rows split into their even and odd columns: ``[N, C, H', 2, W' / 2]``, so a window op
    of column stride 2 reads every tap with unit stride (:func:`phase_reader`). Read strided, a
    stride-2 depthwise 3x3 + SiLU over 128x64x64 took 0.54 ms (0.31 ms split); split in the padded
    copy's own loop, every element was a gather (0.5 ms for 64x130x130, 0.1 ms deinterleaved from
    whole rows by shuffles in a kernel of its own). Padding and splitting in one hand-written
    kernel, with the border chunks element by element, was slower still (1.1 ms)."""
    pt, pl, pb, pr = pads
    n, c, h, w = shape
    pr += (w + pl + pr) % 2
    hp, wp = h + pt + pb, w + pl + pr
    src = padded_copy(bb, x, shape, [pt, pl, pb, pr], fill) if any((pt, pl, pb, pr)) else x
    gv = bb.add_func(_phase_split_kernel(n, c, hp, wp // 2), f"column_phases_{n}x{c}x{hp}x{wp}")
    return bb.emit(relax.call_tir(gv, [src], relax.TensorType([n, c, hp, 2, wp // 2], "float32")))


def phase_reader(src, stride: int):
    """``read(b, ch, row, xo, off)`` = the padded input at column ``xo * stride + off`` (``off`` a
    Python int), from a padded copy, or for ``stride`` 2 from :func:`column_phases`, where it is
    unit-stride in ``xo``."""
    if stride == 2:
        return lambda b, ch, row, xo, off: src[b, ch, row, off % 2, xo + off // 2]
    return lambda b, ch, row, xo, off: src[b, ch, row, xo * stride + off]
