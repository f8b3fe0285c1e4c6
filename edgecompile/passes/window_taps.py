"""Rewrite sliding-window ops as an elementwise combination of their taps over a padded copy:
float depthwise convolutions (one filter per channel: MobileNet-style blocks, EfficientFormer,
MobileViT) as the sum of their taps times the weights, max pooling as the max of its taps and
average pooling (EfficientFormer's token mixer) as their sum over the count of taps averaged.

``out[n, c, y, x] = sum over (dy, dx) of pad(in)[n, c, y*sh + dy*dh, x*sw + dx*dw] * w[c, dy, dx]``
with the ``kh*kw`` taps written out (no reduction loop): the kernel is injective and unguarded,
so our elementwise rule vectorizes it along the output row, and a bias or activation after it
fuses in. The padded input is a stage of the taps' own kernel, computed one channel at a time in
cache (:func:`~edgecompile.passes.padding.padded_stage`); with a column stride of 2
(MobileNet/MobileViT downsampling, stride-2 pools) it is a kernel of its own that splits the rows
into even and odd columns, so the taps still read unit-stride vectors instead of gathering every
other element. A depthwise
convolution with fewer than ``MIN_PIXELS_RIGHT`` output pixels runs channels-last
(:meth:`_WindowTaps._channels_last`), like the pixel-rows GEMMs around it. TVM's CPU form
is a reduction only the fallback schedule takes (3x3 over 192x28x28: 0.48 ms, AVX-512, 1 thread);
so is its max pool (3x3 stride 2 over the same: 0.09 ms). Max pooling pads with -inf (never the
max of a window, which always holds an input pixel); ceil mode keeps TVM's form. Average pooling
pads with zeros and divides by the window's size, or, without ``count_include_pad`` (ONNX's
default), by the number of its taps inside the image, an integer expression of the output position.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te

from edgecompile.passes.conv_gemm import MIN_PIXELS_RIGHT, float_weight, static_nchw
from edgecompile.passes.padding import column_phases, padded_copy, padded_stage, phase_reader
from edgecompile.passes.rewrite import rewrite_functions

MAX_TAPS = 49  # 7x7: larger kernels keep TVM's form


def _tap_sum(rows: list[list]):
    """The taps' products summed row by row, then the rows' sums pairwise: a dependency chain of
    ``kw`` multiply-adds and ``log2(kh)`` adds instead of one of ``kh * kw`` (a 5x5's 25 chained
    FMAs kept each vector of outputs waiting on the FMA's latency)."""
    sums = []
    for row in rows:
        total = row[0]
        for t in row[1:]:
            total = total + t
        sums.append(total)
    while len(sums) > 1:
        sums = [sums[i] + sums[i + 1] if i + 1 < len(sums) else sums[i] for i in range(0, len(sums), 2)]
    return sums[0]


def _taps(xp, w, strides, dilation, out_hw, stage=None):
    xp = padded_stage(xp, *stage) if stage else xp
    _, _, kh, kw = w.shape
    (sh, sw), (dh, dw), (ho, wo) = strides, dilation, out_hw
    read = phase_reader(xp, sw)

    def pixel(b, ch, y, xo):
        return _tap_sum([[read(b, ch, y * sh + dy * dh, xo, dx * dw) * w[ch, 0, dy, dx] for dx in range(int(kw))]
                         for dy in range(int(kh))])

    return te.compute((xp.shape[0], xp.shape[1], ho, wo), pixel, name="depthwise")


def _taps_nhwc(xp, w, strides, dilation, out_hw):
    """:func:`_taps` over an NHWC padded input ``xp`` and ``w[kh, kw, C]``: ``[N, Ho, Wo, C]``."""
    kh, kw, _ = w.shape
    (sh, sw), (dh, dw), (ho, wo) = strides, dilation, out_hw

    def pixel(b, y, xo, ch):
        return _tap_sum([[xp[b, y * sh + dy * dh, xo * sw + dx * dw, ch] * w[dy, dx, ch] for dx in range(int(kw))]
                         for dy in range(int(kh))])

    return te.compute((xp.shape[0], ho, wo, xp.shape[3]), pixel, name="depthwise")


def _max_taps(xp, pool, strides, dilation, out_hw, stage=None):
    xp = padded_stage(xp, *stage) if stage else xp
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = pool, strides, dilation, out_hw
    read = phase_reader(xp, sw)

    def pixel(b, ch, y, xo):
        best = read(b, ch, y * sh, xo, 0)
        for dy in range(kh):
            for dx in range(kw):
                if dy or dx:
                    best = te.max(best, read(b, ch, y * sh + dy * dh, xo, dx * dw))
        return best

    return te.compute((xp.shape[0], xp.shape[1], ho, wo), pixel, name="max_pool")


def _avg_taps(xp, pool, strides, dilation, out_hw, hw, pads, include_pad: bool, stage=None):
    xp = padded_stage(xp, *stage) if stage else xp
    (kh, kw), (sh, sw), (dh, dw), (ho, wo), (h, w) = pool, strides, dilation, out_hw, hw
    pt, pl = pads[0], pads[1]
    read = phase_reader(xp, sw)

    def inside(o, stride, dil, k, pad, size):  # taps of window o that fall inside [0, size)
        first = te.max(te.indexdiv(pad - o * stride + dil - 1, dil), 0)  # least t: o*s - pad + t*d >= 0
        last = te.min(te.indexdiv(size - 1 + pad - o * stride, dil), k - 1)  # greatest t: ... <= size - 1
        return te.max(last - first + 1, 0)

    def pixel(b, ch, y, xo):
        total = read(b, ch, y * sh, xo, 0)
        for dy in range(kh):
            for dx in range(kw):
                if dy or dx:
                    total = total + read(b, ch, y * sh + dy * dh, xo, dx * dw)
        if include_pad:
            return total * te.const(1.0 / (kh * kw), "float32")
        count = inside(y, sh, dh, kh, pt, h) * inside(xo, sw, dw, kw, pl, w)
        return total / count.astype("float32")

    return te.compute((xp.shape[0], xp.shape[1], ho, wo), pixel, name="avg_pool")


def _source(bb, x, shape, pads, stride_w: int, fill: float = 0.0):
    """What the taps read and how: ``(x, None)`` unpadded; for a column stride of 2, the padded
    rows split into even and odd columns (:func:`~edgecompile.passes.padding.column_phases`), a
    kernel of its own; otherwise ``x`` and the ``stage`` argument of the taps' TE function: pad
    in a stage of the taps' own kernel (:func:`~edgecompile.passes.padding.padded_stage`)."""
    if stride_w == 2:
        return column_phases(bb, x, shape, pads, fill), None
    return (x, (pads, fill)) if any(pads) else (x, None)


@relax.expr_functor.mutator
class _WindowTaps(relax.PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        name = getattr(call.op, "name", "")
        if name in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
            return self._pool(call, name == "relax.nn.max_pool2d")
        if name != "relax.nn.conv2d" or len(call.args) != 2:
            return call
        x, w = call.args
        a = call.attrs
        wv, shape, out = float_weight(w), static_nchw(x), static_nchw(call)
        if wv is None or shape is None or out is None:
            return call
        c = shape[1]
        depthwise = int(a.groups) == c and wv.shape[:2] == (c, 1) and wv.shape[2] * wv.shape[3] <= MAX_TAPS
        if not depthwise or str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW":
            return call
        if str(a.out_layout) not in ("NCHW", "") or str(a.out_dtype) not in ("", "void", "None", "float32"):
            return call
        pads = [int(v) for v in a.padding]
        args = (tuple(int(v) for v in a.strides), tuple(int(v) for v in a.dilation), tuple(out[2:]))
        if out[2] * out[3] < MIN_PIXELS_RIGHT:
            return self._channels_last(x, wv, shape, pads, args)
        xp, stage = _source(self.builder_, x, shape, pads, int(a.strides[1]))
        return self.builder_.call_te(_taps, xp, w, *args, stage, primfunc_name_hint="depthwise")

    def _channels_last(self, x, wv, shape, pads, args):
        """The taps in NHWC, vectorized along the channels, between two transposes that cancel
        against the pixel-rows GEMMs around a small image's depthwise convolution (their outputs and
        inputs are NHWC, :func:`~edgecompile.passes.conv_gemm.im2col_conv`). In NCHW, a 14x14 or 7x7 row
        is less than one vector and the transpose to the next GEMM, fused in, made every tap a
        gather (EfficientNet-Lite0's 5x5 over 672x14x14: 1.0 ms)."""
        bb, op = self.builder_, relax.op
        n, c, h, wd = shape
        t = bb.normalize(op.permute_dims(x, [0, 2, 3, 1]))
        xp = padded_copy(bb, t, [n, h, wd, c], pads, layout="NHWC")
        kernel = relax.const(np.ascontiguousarray(wv[:, 0].transpose(1, 2, 0)))
        y = bb.call_te(_taps_nhwc, xp, kernel, *args, primfunc_name_hint="depthwise_nhwc")
        return op.permute_dims(y, [0, 3, 1, 2])

    def _pool(self, call, is_max: bool):
        x, a = call.args[0], call.attrs
        shape, out = static_nchw(x), static_nchw(call)
        pool = tuple(int(v) for v in a.pool_size)
        if shape is None or out is None or bool(a.ceil_mode):
            return call
        if str(a.layout) != "NCHW" or str(a.out_layout) not in ("NCHW", "") or pool[0] * pool[1] > MAX_TAPS:
            return call
        pads = [int(v) for v in a.padding]
        xp, stage = _source(self.builder_, x, shape, pads, int(a.strides[1]), float("-inf") if is_max else 0.0)
        args = (pool, tuple(int(v) for v in a.strides), tuple(int(v) for v in a.dilation), tuple(out[2:]))
        if is_max:
            return self.builder_.call_te(_max_taps, xp, *args, stage, primfunc_name_hint="max_pool")
        avg = (tuple(shape[2:]), pads, bool(a.count_include_pad), stage)
        return self.builder_.call_te(_avg_taps, xp, *args, *avg, primfunc_name_hint="avg_pool")


@tvm.transform.module_pass(opt_level=0, name="WindowTaps")
class WindowTaps:
    """Float depthwise convolutions with constant weights, max and average pools -> elementwise over their taps."""

    def transform_module(self, mod, _ctx):
        return rewrite_functions(mod, _WindowTaps(mod))
