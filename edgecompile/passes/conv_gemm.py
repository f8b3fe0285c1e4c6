"""Rewrite float convolutions with constant weights as GEMMs, which our matmul rule and weight
packing run near the FMA peak; TVM's CPU ``conv2d`` and ``conv2d_transpose`` are loop nests that
reach a few GFLOP/s (4.9 on a 3x3 conv and a 2x2 stride-2 transposed conv, AVX-512, 1 thread).

- ``conv2d`` (one group, NCHW / OIHW): im2col, in one of two layouts. Large images (at least
  :data:`MIN_PIXELS_RIGHT` output pixels, batch 1): the kernel on the left, ``W[O, C*kh*kw] @
  cols[C*kh*kw, Ho*Wo]``, where a row of ``cols`` is one tap's shifted copy of one input channel
  over the zero-padded input (:mod:`~edgecompile.passes.padding`): the copy reads and writes image
  rows contiguously, the GEMM's output is NCHW already and an unpadded 1x1 convolution needs no
  copy at all. Small images (EfficientFormer's 7x7, whose 49 pixels would pad to 64 GEMM columns):
  the pixels as rows, ``[N*Ho*Wo, kh*kw*C] @ [kh*kw*C, O]`` over the NHWC input's windows, channels
  innermost, with the weights packed (:mod:`~edgecompile.lower.pack_weights`, which also packs the
  first layout's deep column matrices into its GEMM's panels in the copy that writes them). The first layout was
  measured on a DINOv2-style depth head: its 3x3 conv over 128x112x112 spent 20.9 ms building the
  pixel-rows columns from the NCHW input (a strided gather per element, 0.5 GOP/s).
  The column matrix is ``kh*kw`` times the input: above :data:`MAX_COLUMNS_BYTES` the
  convolution is left as it is (the kernel table and the fallback warning show it).
- ``conv2d_transpose`` (one group, NCHW / IOHW): each input pixel scatters a ``kh x kw`` block,
  the GEMM ``[N*H*W, C] @ [C, O*kh*kw]``; with stride equal to the kernel and no padding (the
  2x2/stride-2 upsampling of segmentation and depth heads) the blocks do not overlap and a
  reshuffle places them, otherwise ``col2im`` adds the overlapping entries (padding, dilation and
  output padding from the call's attributes and inferred shape), at dilation 1 reading only the
  ``ceil(kh/sh) x ceil(kw/sw)`` taps that land on each output pixel. TVM's own form convolves the
  zero-dilated input, doing ``kh*kw`` times the work, and gives wrong values for overlapping
  kernels (3x3 stride 2 against ONNX Runtime and torch: off by up to 5.2 on outputs of 0..10).
Stride-equals-kernel ``conv2d`` (patch embedding) is :mod:`edgecompile.passes.patchify`'s, which
runs first. The rewrites are exact up to summation order.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx

from edgecompile.ir.ops import const_array, static_shape
from edgecompile.passes.padding import padded_copy
from edgecompile.passes.rewrite import rewrite_functions

MAX_COLUMNS_BYTES = 64 << 20  # the im2col matrix of one convolution (it lives in the planned arena)
MIN_PIXELS_RIGHT = 256  # output pixels from which the kernel goes on the left of the GEMM


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def float_weight(w) -> np.ndarray | None:
    """A constant float32 OIHW / IOHW kernel as numpy; None for anything else."""
    value = const_array(w)
    return value if value is not None and value.dtype == np.float32 and value.ndim == 4 else None


def static_nchw(x) -> list[int] | None:
    """The static 4-D shape of a float32 tensor expression; None for anything else."""
    shape = static_shape(x)
    return shape if shape is not None and len(shape) == 4 and str(x.ty.dtype) == "float32" else None


def _im2col(t, kh: int, kw: int, strides, dilation, pads, out_hw):
    """``[N, Ho, Wo, kh, kw, C]``: for every output pixel the input pixels its kernel window reads
    (zero outside the image), from the NHWC input ``t``; C innermost, so rows copy contiguously."""
    _, h, w, _ = t.shape
    (sh, sw), (dh, dw), (pt, pl), (ho, wo) = strides, dilation, pads, out_hw

    def pixel(b, y, x, dy, dx, ch):
        iy, ix = y * sh + dy * dh - pt, x * sw + dx * dw - pl
        inside = tirx.all(iy >= 0, iy < h, ix >= 0, ix < w)
        value = t[b, tirx.max(tirx.min(iy, h - 1), 0), tirx.max(tirx.min(ix, w - 1), 0), ch]
        return tirx.if_then_else(inside, value, tirx.const(0, t.dtype))

    return te.compute((t.shape[0], ho, wo, kh, kw, t.shape[3]), pixel, name="im2col")


def im2col_conv(bb, x, wv: np.ndarray, shape: list[int], attrs):
    """``conv2d(x, wv)`` as the NHWC input's kernel windows (:func:`_im2col`) times the kernel."""
    op = relax.op
    n, c, h, wd = shape
    o, _, kh, kw = wv.shape
    sh, sw = _ints(attrs.strides)
    dh, dw = _ints(attrs.dilation)
    pt, pl, pb, pr = _ints(attrs.padding)
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1 or n * ho * wo * kh * kw * c * 4 > MAX_COLUMNS_BYTES:
        return None
    if ho * wo >= MIN_PIXELS_RIGHT and n == 1:
        return _kernel_left_conv(bb, x, wv, shape, (sh, sw), (dh, dw), (pt, pl, pb, pr), (ho, wo))
    t = bb.normalize(op.permute_dims(x, [0, 2, 3, 1]))
    if (kh, kw, sh, sw, pt, pb, pl, pr) == (1, 1, 1, 1, 0, 0, 0, 0):
        cols = t
    else:
        cols = bb.call_te(_im2col, t, kh, kw, (sh, sw), (dh, dw), (pt, pl), (ho, wo), primfunc_name_hint="im2col")
    cols = op.reshape(cols, [n * ho * wo, kh * kw * c])
    kernel = relax.const(np.ascontiguousarray(wv.transpose(2, 3, 1, 0).reshape(kh * kw * c, o)))
    y = op.reshape(op.matmul(cols, kernel), [n, ho, wo, o])
    return op.permute_dims(y, [0, 3, 1, 2])


def _shifted_rows(xp, kh: int, kw: int, strides, dilation, out_hw):
    """``[N, C, kh, kw, Ho, Wo]``: for every channel and tap, the (padded) input ``xp`` shifted under
    the output grid; a row is a contiguous slice of an input row at stride 1."""
    (sh, sw), (dh, dw), (ho, wo) = strides, dilation, out_hw

    def tap(b, ch, dy, dx, y, x):
        return xp[b, ch, y * sh + dy * dh, x * sw + dx * dw]

    return te.compute((xp.shape[0], xp.shape[1], kh, kw, ho, wo), tap, name="im2col")


def _kernel_left_conv(bb, x, wv: np.ndarray, shape: list[int], strides, dilation, pads, out_hw):
    """``conv2d`` of one image as ``W[O, C*kh*kw] @ cols[C*kh*kw, Ho*Wo]``, the output NCHW as it comes
    (batches keep the pixel rows, which fold the batch into the GEMM's rows)."""
    op = relax.op
    n, c, _, _ = shape
    o, _, kh, kw = wv.shape
    ho, wo = out_hw
    if (kh, kw, *strides, *pads) == (1, 1, 1, 1, 0, 0, 0, 0):
        cols = op.reshape(x, [c, ho * wo])
    else:
        xp = padded_copy(bb, x, shape, list(pads)) if any(pads) else x
        cols = bb.call_te(_shifted_rows, xp, kh, kw, strides, dilation, out_hw, primfunc_name_hint="im2col")
        cols = op.reshape(cols, [c * kh * kw, ho * wo])
    y = op.matmul(relax.const(np.ascontiguousarray(wv.reshape(o, c * kh * kw))), cols)
    return op.reshape(y, [n, o, ho, wo])


def _col2im(cols, strides, dilation, pads, out_hw):
    """``[N, O, Ho, Wo]`` from ``cols[N, H, W, O, kh, kw]`` (each input pixel's kernel-sized block):
    output pixel ``Y = h*sh - pt + i*dh`` sums every block entry that lands on it."""
    n, h, w, o, kh, kw = cols.shape
    (sh, sw), (dh, dw), (pt, pl), (ho, wo) = strides, dilation, pads, out_hw
    ri, rj = te.reduce_axis((0, kh), name="ri"), te.reduce_axis((0, kw), name="rj")

    def pixel(b, c, y, x):
        ty, tx = y + pt - ri * dh, x + pl - rj * dw
        iy, ix = tirx.indexdiv(ty, sh), tirx.indexdiv(tx, sw)
        lands = tirx.all(ty >= 0, tx >= 0, tirx.indexmod(ty, sh) == 0, tirx.indexmod(tx, sw) == 0, iy < h, ix < w)
        value = cols[b, tirx.max(tirx.min(iy, h - 1), 0), tirx.max(tirx.min(ix, w - 1), 0), c, ri, rj]
        return te.sum(tirx.if_then_else(lands, value, tirx.const(0, cols.dtype)), axis=[ri, rj])

    return te.compute((n, o, ho, wo), pixel, name="col2im")


def _phase_col2im(cols, strides, pads, out_hw, kernel_left: bool = False):
    """:func:`_col2im` at dilation 1, reading only the taps that land: output row ``y`` takes
    kernel rows ``ri = (y + pt) % sh + sh t`` from input rows ``(y + pt) // sh - t``,
    ``t < ceil(kh / sh)`` (a 4x4 stride-2 kernel: 4 terms, not 16 guarded ones), as an
    elementwise sum. ``kernel_left``: ``cols[O, kh, kw, H, W]`` of one image (neighbouring output
    pixels read neighbouring entries), else ``cols[N, H, W, O, kh, kw]``."""
    if kernel_left:
        o, kh, kw, h, w = cols.shape
        n = 1

        def at(b, iy, ix, c, ri, rj):
            return cols[c, ri, rj, iy, ix]
    else:
        n, h, w, o, kh, kw = cols.shape

        def at(b, iy, ix, c, ri, rj):
            return cols[b, iy, ix, c, ri, rj]

    (sh, sw), (pt, pl), (ho, wo) = strides, pads, out_hw
    th, tw = -(-int(kh) // sh), -(-int(kw) // sw)

    def pixel(b, c, y, x):
        py, px = tirx.indexmod(y + pt, sh), tirx.indexmod(x + pl, sw)
        qy, qx = tirx.indexdiv(y + pt, sh), tirx.indexdiv(x + pl, sw)
        total = tirx.const(0, cols.dtype)
        for t in range(th):
            for u in range(tw):
                ri, rj, iy, ix = py + sh * t, px + sw * u, qy - t, qx - u
                lands = tirx.all(ri < kh, rj < kw, iy >= 0, iy < h, ix >= 0, ix < w)
                value = at(b, tirx.max(tirx.min(iy, h - 1), 0), tirx.max(tirx.min(ix, w - 1), 0), c,
                           tirx.min(ri, kh - 1), tirx.min(rj, kw - 1))  # fmt: skip
                total = total + tirx.if_then_else(lands, value, tirx.const(0, cols.dtype))
        return total

    return te.compute((n, o, ho, wo), pixel, name="col2im")


def scatter_transpose_conv(bb, x, wv: np.ndarray, shape: list[int], attrs, out_hw):
    """``conv2d_transpose(x, wv)`` in general: each input pixel's block ``[N*H*W, C] @ [C, O*kh*kw]``,
    then the overlapping blocks added into the output: by :func:`_phase_col2im` at dilation 1
    (the DINOv2 focus head's three 4x4 stride-2 upsamplings, Zen 4, 1 thread: 31.4 -> 17.8 ms,
    the BatchNorm and ReLU after them now fused in; the model 189 -> 181 ms), :func:`_col2im`
    otherwise. One image at dilation 1 takes the kernel on the left instead, ``[O*kh*kw, C] @
    x[C, H*W]``, no transpose of the input, and its blocks laid out so that neighbouring output
    pixels read neighbouring entries (the zoo's DINOv2 head, 3x3 stride 2, 128 -> 64 channels at
    64x64, Zen 4: the scatter 2.97 -> 1.28 ms; in ``[N, H, W, O, kh, kw]`` each pixel read a
    different 64-byte block)."""
    op = relax.op
    n, c, h, wd = shape
    _, o, kh, kw = wv.shape
    pt, pl = _ints(attrs.padding)[:2]
    strides = tuple(_ints(attrs.strides))
    if n == 1 and _ints(attrs.dilation) == [1, 1]:
        left = relax.const(np.ascontiguousarray(wv.reshape(c, o * kh * kw).T))
        cols = bb.normalize(op.reshape(op.matmul(left, op.reshape(x, [c, h * wd])), [o, kh, kw, h, wd]))
        return bb.call_te(_phase_col2im, cols, strides, (pt, pl), out_hw, True, primfunc_name_hint="col2im")
    t = op.reshape(op.permute_dims(x, [0, 2, 3, 1]), [n * h * wd, c])
    y = op.matmul(t, relax.const(np.ascontiguousarray(wv.reshape(c, o * kh * kw))))
    cols = bb.normalize(op.reshape(y, [n, h, wd, o, kh, kw]))
    if _ints(attrs.dilation) == [1, 1]:
        return bb.call_te(_phase_col2im, cols, strides, (pt, pl), out_hw, primfunc_name_hint="col2im")
    args = (strides, tuple(_ints(attrs.dilation)), (pt, pl), out_hw)
    return bb.call_te(_col2im, cols, *args, primfunc_name_hint="col2im")


def blocks_transpose_conv(x, wv: np.ndarray, shape: list[int]):
    """``conv2d_transpose(x, wv)`` with stride == kernel and no padding: one block per input pixel."""
    op = relax.op
    n, c, h, wd = shape
    _, o, kh, kw = wv.shape
    t = op.reshape(op.permute_dims(x, [0, 2, 3, 1]), [n * h * wd, c])
    y = op.matmul(t, relax.const(np.ascontiguousarray(wv.reshape(c, o * kh * kw))))
    y = op.permute_dims(op.reshape(y, [n, h, wd, o, kh, kw]), [0, 3, 1, 4, 2, 5])
    return op.reshape(y, [n, o, h * kh, wd * kw])


@relax.expr_functor.mutator
class _ConvToGemm(relax.PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        name = getattr(call.op, "name", "")
        if name not in ("relax.nn.conv2d", "relax.nn.conv2d_transpose") or len(call.args) != 2:
            return call
        x, w = call.args
        wv, shape, a = float_weight(w), static_nchw(x), call.attrs
        if wv is None or shape is None or int(a.groups) != 1 or str(a.data_layout) != "NCHW":
            return call
        if str(a.out_layout) not in ("NCHW", "") or str(a.out_dtype) not in ("", "void", "None", "float32"):
            return call
        if name == "relax.nn.conv2d":
            ok = str(a.kernel_layout) == "OIHW" and wv.shape[1] == shape[1]
            out = im2col_conv(self.builder_, x, wv, shape, a) if ok else None
        else:
            out = self._transposed(call, x, wv, shape, a)
        return call if out is None else out

    def _transposed(self, call, x, wv, shape, a):
        if str(a.kernel_layout) != "IOHW" or wv.shape[0] != shape[1]:
            return None
        out_shape = static_nchw(call)
        if out_shape is None:
            return None
        kh, kw = wv.shape[2:]
        if _ints(a.strides) == [kh, kw] and not any(_ints(a.padding)) and not any(_ints(a.output_padding)):
            if _ints(a.dilation) == [1, 1]:
                return blocks_transpose_conv(x, wv, shape)
        return scatter_transpose_conv(self.builder_, x, wv, shape, a, tuple(out_shape[2:]))


@tvm.transform.module_pass(opt_level=0, name="ConvToGemm")
class ConvToGemm:
    """Float convolutions and non-overlapping transposed convolutions with constant weights -> GEMMs."""

    def transform_module(self, mod, _ctx):
        return rewrite_functions(mod, _ConvToGemm(mod))
