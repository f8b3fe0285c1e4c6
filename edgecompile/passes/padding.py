"""Zero- (or ``fill``-) padded NCHW tensors, what the window rewrites
(:mod:`~edgecompile.passes.window_taps`, :mod:`~edgecompile.passes.conv_gemm`) read instead of
bounds-checking every tap: a padded copy as an opaque kernel of its own (fusion would fold the
padding's bounds checks back into every tap of the consumer, which made depthwise taps 3x slower
than TVM's form), a padded stage inside a stride-1 window op's kernel (:func:`padded_stage`), or,
for column stride 2, the padded rows split into even and odd columns (:func:`column_phases`)."""

from __future__ import annotations

from tvm import relax, te

from edgecompile.passes.rewrite import emit_opaque_kernel


def _padded(a, shape: list[int], pads: list[int], fill: float, layout: str, name: str, attrs=None):
    """The TE compute of ``a`` (``shape`` in ``layout``) padded by ``pads`` = (top, left, bottom,
    right) with ``fill``."""
    pt, pl, pb, pr = pads
    hx, wx = (2, 3) if layout == "NCHW" else (1, 2)
    h, w = shape[hx], shape[wx]
    out = list(shape)
    out[hx], out[wx] = h + pt + pb, w + pl + pr

    def value(*idx):
        y, xo = idx[hx], idx[wx]
        src = list(idx)
        src[hx], src[wx] = te.max(te.min(y - pt, h - 1), 0), te.max(te.min(xo - pl, w - 1), 0)
        return te.if_then_else(te.all(y >= pt, y < h + pt, xo >= pl, xo < w + pl), a[tuple(src)],
                               te.const(fill, "float32"))  # fmt: skip

    return te.compute(out, value, name=name, attrs=attrs)


def padded_copy(
    bb: relax.BlockBuilder, x: relax.Expr, shape: list[int], pads: list[int], fill: float = 0.0, layout: str = "NCHW"
):
    """``x`` (static ``shape`` in ``layout``, NCHW or NHWC) padded by ``pads`` = (top, left,
    bottom, right) with ``fill``. An NHWC copy is made even without padding: the channels-last
    taps then read a buffer of their own, not a transpose inlined into every tap (a gather per
    element)."""
    a = te.placeholder(shape, "float32", name="x")
    p = _padded(a, shape, pads, fill, layout, "pad")
    return emit_opaque_kernel(bb, x, a, p, "window_pad" if layout == "NCHW" else "window_pad_nhwc")


STAGE_ATTR = "edgecompile.window_pads"  # block annotation of a padded stage: (top, left, bottom, right)


def padded_stage(a: te.Tensor, pads: list[int], fill: float = 0.0) -> te.Tensor:
    """``a`` (a static NCHW TE tensor) padded as :func:`padded_copy`, but as a stage of the window
    op's own kernel rather than a kernel of its own: its block carries ``STAGE_ATTR``, from which
    the elementwise schedule computes it one channel at a time inside the op's channel loop, in
    cache, with the padding columns split off so that the interior copies in whole vectors
    (:func:`~edgecompile.lower.schedules.window_stage.schedule_staged`). A separate padded copy
    went through memory: 0.26 ms of copy for a 3x3 depthwise + SiLU of 0.42 ms over 192x64x64."""
    shape = [int(d) for d in a.shape]
    return _padded(a, shape, list(pads), fill, "NCHW", "window_stage", {STAGE_ATTR: [int(p) for p in pads]})


SPLIT_LANES = 8  # floats per vector of the column-phase split (every target's vectors hold 4 to 16)


def _phase_split_kernel(shape: list[int], pads: list[int], fill: float):
    """``out[b, ch, y, p, q] = pad(x)[b, ch, y, 2 q + p]`` for ``x`` of ``shape`` (NCHW) padded by
    ``pads`` = (top, left, bottom, right) with ``fill``: the padding is written as the columns are
    split, so no padded copy is made first. Each source row's whole vectors (``2 * SPLIT_LANES``
    floats: two loads) are deinterleaved by shuffles into its even and odd columns, stored at the
    phases' offsets (the left padding moves the odd columns one output along); the outputs no
    vector covers (the padding and a row's tail) are written one by one. A padded copy first and its
    split after took 0.64 + 0.24 ms for MobileViT's 128x128x128 (stride-2 depthwise), in one pass 0.25."""
    from tvm.script import tirx as T

    n, c, h, w = shape
    pt, pl, pb, pr = pads
    hp, half = h + pt + pb, (w + pl + pr) // 2
    v = SPLIT_LANES
    nvec = w // (2 * v)
    even, odd = list(range(0, 2 * v, 2)), list(range(1, 2 * v, 2))
    # source column 2 i (even) lands in phase pl % 2 at q = i + pl // 2; 2 i + 1 in the other at q = i + (pl + 1) // 2
    p_even, q_even, q_odd = pl % 2, pl // 2, (pl + 1) // 2
    first = {p_even: q_even, 1 - p_even: q_odd}  # per phase: the first output its vectors write
    f0, step, span = first[0], first[1] - first[0], nvec * v  # phase p's vectors: [f0 + step p, + span)
    fv = T.float32(fill)

    @T.prim_func(private=True, s_tir=True)
    def split(x: T.Buffer((n, c, h, w), "float32"), out: T.Buffer((n, c, hp, 2, half), "float32")):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for r in T.parallel(n * c * hp):
            with T.sblock("split"):
                b = T.axis.spatial(n, r // (c * hp))
                ch = T.axis.spatial(c, r // hp % c)
                y = T.axis.spatial(hp, r % hp)
                T.reads(x[b, ch, 0:h, 0:w])
                T.writes(out[b, ch, y, 0:2, 0:half])
                if y < pt or y >= h + pt:
                    for p, q in T.grid(2, half):
                        out[b, ch, y, p, q] = fv
                else:
                    for j in range(nvec):
                        out[b, ch, y, p_even, T.ramp(q_even + j * v, 1, v)] = T.Shuffle(
                            [x[b, ch, y - pt, T.ramp(2 * v * j, 1, v)], x[b, ch, y - pt, T.ramp(2 * v * j + v, 1, v)]],
                            even,
                        )
                        out[b, ch, y, 1 - p_even, T.ramp(q_odd + j * v, 1, v)] = T.Shuffle(
                            [x[b, ch, y - pt, T.ramp(2 * v * j, 1, v)], x[b, ch, y - pt, T.ramp(2 * v * j + v, 1, v)]],
                            odd,
                        )
                    for p, q in T.grid(2, half):
                        if q < f0 + step * p or q >= f0 + step * p + span:
                            out[b, ch, y, p, q] = T.if_then_else(
                                2 * q + p >= pl and 2 * q + p < w + pl,
                                x[b, ch, y - pt, T.max(T.min(2 * q + p - pl, w - 1), 0)],
                                fv,
                            )

    return split


def column_phases(bb: relax.BlockBuilder, x: relax.Expr, shape: list[int], pads: list[int], fill: float = 0.0):
    """``x`` padded as :func:`padded_copy` (and by one more ``fill`` column where the padded width is
    odd), its rows split into their even and odd columns: ``[N, C, H', 2, W' / 2]``, so a window op
    of column stride 2 reads every tap with unit stride (:func:`phase_reader`). Read strided, a
    stride-2 depthwise 3x3 + SiLU over 128x64x64 took 0.54 ms (0.31 ms split); split in the padded
    copy's own loop, every element was a gather (0.5 ms for 64x130x130, 0.1 ms deinterleaved from
    whole rows by shuffles in a kernel of its own). The padding is written by the split itself
    (:func:`_phase_split_kernel`)."""
    pt, pl, pb, pr = pads
    n, c, h, w = shape
    pr += (w + pl + pr) % 2
    hp, wp = h + pt + pb, w + pl + pr
    split = _phase_split_kernel(shape, [pt, pl, pb, pr], fill)
    gv = bb.add_func(split, f"column_phases_{n}x{c}x{hp}x{wp}")
    return bb.emit(relax.call_tir(gv, [x], relax.TensorType([n, c, hp, 2, wp // 2], "float32")))


def phase_reader(src, stride: int):
    """``read(b, ch, row, xo, off)`` = the padded input at column ``xo * stride + off`` (``off`` a
    Python int), from a padded copy, or for ``stride`` 2 from :func:`column_phases`, where it is
    unit-stride in ``xo``."""
    if stride == 2:
        return lambda b, ch, row, xo, off: src[b, ch, row, off % 2, xo + off // 2]
    return lambda b, ch, row, xo, off: src[b, ch, row, xo * stride + off]
