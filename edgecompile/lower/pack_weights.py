"""Pack constant GEMM weights into the layout our CPU micro-kernels read.

fp32: ``matmul(x, W)`` with a constant ``W[K, N]`` becomes a GEMM over ``Wp[N / NR, K, NR]`` (done
once, at compile time, with numpy): each ``NR``-wide column panel of ``W`` is contiguous, so the
micro-kernel streams it with unit stride instead of jumping a whole row of ``W`` per step (a
new cache line, and often a new page, every ``k``). ``NR`` is the tile width the CPU matmul rule
chooses for the target (:func:`edgecompile.lower.schedules.tiles.gemm_nr`), so the rule sees
``Wp[j // NR, k, j % NR]`` become ``Wp[j0, k, j1]`` after it splits ``j``.

int8 (``matmul(x_i8, W_i8, out_dtype="int32")``) on a CPU with a dot-product instruction
(:mod:`edgecompile.lower.schedules.int8_dot`): ``Wp[N / NR, K / KR, NR, KR]`` in the instruction's
operand type, so one ``LANES x KR`` block is one vector load. The GEMM function then has three
stages: A converted to the instruction's operand type (+128 for ``vpdpbusd``, int16 for
``vpmaddwd``) with M padded to whole row tiles and K to whole groups (zeros), the int32
reduction (annotated for :class:`~edgecompile.lower.schedules.cpu_int8_matmul.Int8Matmul`), and
the unpadded output, which subtracts ``128 * colsum(W)`` when A was shifted. Without such an
instruction, int8 GEMMs take the fp32 packing with int32 accumulation.

An int32 matmul of two integer activations (attention's ``Q K^T``, ``P V``) is packed at run time
instead: :mod:`edgecompile.lower.activation_gemm`.

fp32 ``W @ x`` with the constant on the left (a kernel-left convolution's ``W[O, C*kh*kw] @
cols``, :mod:`edgecompile.passes.conv_gemm`): the activation ``x`` is packed into the same
``[N / NR, K, NR]`` panels at run time, by a copy that fusion merges into the im2col writing
``x`` (the DINOv2 depth head's 3x3 convolutions, Zen 4: 86-100 -> 101-111 GFLOP/s); only where
``x`` is deep enough for that to pay (:data:`MIN_RIGHT_PANEL_DEPTH`).

bf16 (a module marked by the ``bf16`` recipe, on a CPU with AVX-512 BF16): fp32 ``x @ W`` over
``Wp[N / NR, K / 2, NR, 2]`` holding W rounded to bf16, through the same three stages with fp32
accumulators (:func:`edgecompile.lower.schedules.int8_dot.bf16_kernel`).
"""

from __future__ import annotations

import functools

import numpy as np
import tvm
from tvm import relax, te, tirx

from edgecompile.ir.attrs import MATMUL_PRECISION_ATTR
from edgecompile.ir.ops import static_shape
from edgecompile.lower.activation_gemm import pack_activation_matmul
from edgecompile.lower.dot_operands import converted_a, paired_a
from edgecompile.lower.schedules.bf16_pairs import PAIR_GROUP, bf16_pair_kernel, pair_product
from edgecompile.lower.schedules.int8_dot import (
    INT8_GEMM_ATTR,
    INT8_MR_ATTR,
    Int8Kernel,
    bf16_kernel,
    int8_kernel,
)
from edgecompile.lower.schedules.isa import VectorISA, vector_isa
from edgecompile.lower.schedules.tiles import dot_gemm_mr, gemm_mr, gemm_nr
from edgecompile.passes.rewrite import rewrite_functions

MIN_RIGHT_PANEL_COLUMNS = 256  # an activation right operand this wide is packed at run time
MIN_LEFT_ROWS = 16  # ... under a constant left operand this tall (a GEMV is not worth a copy)
# ... and this deep: measured on 1x1 convolutions (Zen 4, 1 thread), packing made K <= 64 slower
# (16 -> 64 channels at 128x128: 1.15 -> 2.67 ms), K = 128 equal, K = 192 8% faster, and every 3x3
# convolution's im2col columns (K = 9 C) 10-18% faster
MIN_RIGHT_PANEL_DEPTH = 144


def bf16_round(w: np.ndarray) -> np.ndarray:
    """``w`` rounded to bf16 (to nearest, ties to even; NaN kept), as float32."""
    u = np.ascontiguousarray(w, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32)
    return np.where(np.isnan(w), w, r).astype(np.float32)


def _packed_matmul(x, wp, out_dtype, row_tile: int = 1, rows_axis: int | None = None, cols: int | None = None):
    """``x @ W`` over packed ``W``; with ``row_tile`` > 1 the rows are computed up to a whole number
    of row tiles (the extra rows re-read the last row of ``x``) and the real ones selected after,
    so the register-blocked kernel has no row tail: the selection is inlined into the epilogue, the
    padded product lives only in the tile's registers. ``rows_axis``: the one leading axis of ``x``
    longer than 1 when it is not the second last (a sequence-first ``[S, 1, K]``): the GEMM runs
    over those rows as over ``[S, K]``, written back in ``x``'s layout. ``cols``: the real column
    count when ``W`` was padded with zero columns to whole panels."""
    *lead, k_dim = x.shape
    nb, _, nr = wp.shape
    cols = nb * nr if cols is None else cols
    k = te.reduce_axis((0, k_dim), name="k")
    m = lead[rows_axis] if rows_axis is not None else lead[-1]
    mp = tirx.indexdiv(m + row_tile - 1, row_tile) * row_tile

    def a(b, i):
        row = tirx.min(i, m - 1) if row_tile > 1 else i
        if rows_axis is None:
            return x[(*b, row, k)]
        return x[(*(row if ax == rows_axis else 0 for ax in range(len(lead))), k)]

    def body(*idx):
        *b, i, j = idx
        return te.sum(a(b, i).astype(out_dtype) * wp[j // nr, k, j % nr].astype(out_dtype), axis=k)

    if rows_axis is not None:
        full = te.compute((mp, nb * nr), body, name="matmul")
        return te.compute((*lead, cols), lambda *idx: full[idx[rows_axis], idx[-1]], name="matmul_rows")
    full = te.compute((*lead[:-1], mp, nb * nr), body, name="matmul")
    if row_tile == 1 and cols == nb * nr:
        return full
    return te.compute((*lead, cols), lambda *idx: full[idx], name="matmul_rows")


def _int8_gemm(x, wp, *comp, kernel: Int8Kernel, mr: int):
    *batch, m, _ = x.shape
    nb, kb, nr, kr = wp.shape
    a = paired_a(x, mr) if kernel.bf16_pairs else converted_a(x, kernel, mr, kb * kr)
    mp = a.shape[-2]
    ko = te.reduce_axis((0, kb), name="ko")
    kk = te.reduce_axis((0, kr), name="kk")

    def dot(*idx):
        *b, i, j = idx
        acc = kernel.acc_dtype
        if kernel.bf16_pairs:  # one word per step: no unit k loop (tensorize matches none)
            return te.sum(pair_product(a[(*b, i, ko)], wp[j // nr, ko, j % nr, 0]), axis=ko)
        return te.sum(a[(*b, i, ko * kr + kk)].astype(acc) * wp[j // nr, ko, j % nr, kk].astype(acc), axis=[ko, kk])

    acc = te.compute(
        (*batch, mp, nb * nr), dot, name="int8_gemm", attrs={INT8_GEMM_ATTR: kernel.intrin, INT8_MR_ATTR: mr}
    )
    if not comp:
        return te.compute((*batch, m, nb * nr), lambda *idx: acc[idx], name="int8_gemm_out")
    return te.compute((*batch, m, nb * nr), lambda *idx: acc[idx] - comp[0][idx[-1]], name="int8_gemm_out")


def int8_tile(kernel: Int8Kernel, isa: VectorISA, n: int) -> int | None:
    """Columns per register tile for an int8 GEMM with ``n`` columns (None: no whole tile fits).
    ``vpmaddwd`` needs a scratch register per product, so with 16 registers the tile is 2 vectors
    wide (measured on MiniLM's FFN: 16x6 tiles 142 GOP/s, 24x4 96 GOP/s as it spills)."""
    nvec = (2 if not kernel.in_place else 3) if isa.registers <= 16 else 4
    for v in range(nvec, 0, -1):
        if n % (v * kernel.lanes) == 0:
            return v * kernel.lanes
    return None


def _right_panels(x, nr: int):
    """``x[K, N]`` as ``[N / NR, K, NR]`` column panels (``NR`` divides ``N``)."""
    k, n = x.shape
    return te.compute((n // nr, k, nr), lambda jo, kk, ji: x[kk, jo * nr + ji], name="pack_panels")


def _row_tile(isa: VectorISA, m: int, nr: int) -> int:
    """The row tile ``_packed_matmul`` computes ``m`` rows up to: the matmul rule's tile height when
    it does not divide ``m`` (no guarded row tail), else 1 (nothing to pad)."""
    mr = gemm_mr(isa, m, nr, 32, allow_tail=True)
    return mr if m % mr else 1


def _rows_axis(lead) -> int | None:
    """The one static leading axis longer than 1 when it is not the rows axis (``[S, 1, K]``, torch's
    sequence-first attention): else the batch of 197 one-row GEMMs ran as a guarded row tail at 144
    instead of 210 GFLOP/s (ViT-Tiny's QKV projection, AVX-512, 1 thread)."""
    if not all(isinstance(d, tirx.IntImm) for d in lead):
        return None
    longer = [ax for ax, d in enumerate(lead) if int(d) > 1]
    return longer[0] if len(longer) == 1 and longer[0] != len(lead) - 1 else None


def _static_rows(x) -> int | None:
    """The row count of ``x``'s GEMM (its second last dimension) where static."""
    m = x.ty.shape.values[-2]
    return int(m) if isinstance(m, tirx.IntImm) else None


@relax.expr_functor.mutator
class _Packer(relax.PyExprMutator):
    def __init__(self, mod, isa, bf16: bool = False):
        super().__init__(mod)
        self.isa = isa
        self.bf16 = bf16

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if getattr(call.op, "name", "") != "relax.matmul":
            return call
        if not isinstance(call.args[1], tvm.ir.expr.Constant):
            if isinstance(call.args[0], tvm.ir.expr.Constant):
                packed = self._pack_right(*call.args, str(call.attrs.out_dtype))
                return call if packed is None else packed
            if str(call.attrs.out_dtype) != "int32":
                return call
            packed = pack_activation_matmul(self.builder_, *call.args, self.isa)
            return call if packed is None else packed
        x, w = call.args
        wv = w.value.numpy() if hasattr(w.value, "numpy") else None
        if wv is None or wv.ndim != 2 or len(x.ty.shape.values) < 2:
            return call
        x_dtype, out_dtype = str(x.ty.dtype), str(call.attrs.out_dtype)
        if wv.dtype == np.float32 and x_dtype == "float32" and out_dtype in ("", "void", "None", "float32"):
            packed = self._pack_bf16(x, wv) if self.bf16 else None
            if packed is None:
                packed = self._pack(x, wv, "float32")
        elif wv.dtype == np.int8 and x_dtype == "int8" and out_dtype == "int32":
            packed = self._pack_int8(x, wv)
            if packed is None:
                packed = self._pack(x, wv, "int32")
        else:
            packed = None
        return call if packed is None else packed

    def _pack(self, x, wv, out_dtype):
        k, n = wv.shape
        nr = gemm_nr(self.isa, n, 32)
        if n < nr:
            return None
        # N no tile divides (MobileViT's 360-wide QKV): zero columns up to whole panels, the real ones
        # selected when the tile is written (360 of 384: 44 -> ~170 GFLOP/s on [256, 120] @ [120, 360])
        wide = -(-n // nr) * nr
        wpad = np.zeros((k, wide), wv.dtype)
        wpad[:, :n] = wv
        packed = np.ascontiguousarray(wpad.reshape(k, wide // nr, nr).transpose(1, 0, 2))
        # a ragged row count (ViT's 197 tokens) is computed to whole row tiles of the matmul rule's
        # height (measured on 197x384x384, 1 thread, AVX-512: 112 -> ~190 GFLOP/s, the guarded tail gone)
        lead = x.ty.shape.values[:-1]
        rows_axis = _rows_axis(lead)
        m = lead[-1] if rows_axis is None else lead[rows_axis]
        tile = _row_tile(self.isa, int(m), nr) if isinstance(m, tirx.IntImm) else 1
        gemm = functools.partial(_packed_matmul, row_tile=tile, rows_axis=rows_axis, cols=n)
        return self.builder_.call_te(gemm, x, relax.const(packed), out_dtype, primfunc_name_hint="matmul_packed")

    def _pack_right(self, w, x, out_dtype):
        """fp32 ``W @ x`` with a constant ``W[M, K]`` on the left and an activation ``x[K, N]`` (a
        convolution's kernel times its im2col columns, :mod:`edgecompile.passes.conv_gemm`): ``x``
        packed into panels at run time by a copy that fuses with the im2col that produces it."""
        w_shape, shape = static_shape(w), static_shape(x)
        if w_shape is None or len(w_shape) != 2 or shape is None or len(shape) != 2:
            return None
        if str(w.ty.dtype) != "float32" or str(x.ty.dtype) != "float32":
            return None
        if out_dtype not in ("", "void", "None", "float32"):
            return None
        m, (k, n) = w_shape[0], shape
        nr = gemm_nr(self.isa, n, 32)
        if m < MIN_LEFT_ROWS or k < MIN_RIGHT_PANEL_DEPTH or n < MIN_RIGHT_PANEL_COLUMNS or n % nr:
            return None
        bb = self.builder_
        # x as it is (a var-to-var binding would stop the copy from fusing with the im2col)
        panels = bb.emit(bb.call_te(_right_panels, x, nr, primfunc_name_hint="pack_panels"))
        gemm = functools.partial(_packed_matmul, row_tile=_row_tile(self.isa, m, nr))
        return bb.call_te(gemm, w, panels, "float32", primfunc_name_hint="matmul_packed")

    def _pack_bf16(self, x, wv):
        """fp32 ``x @ W`` on the bf16 dot product: W rounded to bf16 and packed, as bf16 pairs in
        ``uint32`` words ``[N/NR, K/2, NR, 1]`` where K is a whole number of the A stage's 32-float
        steps (:mod:`~edgecompile.lower.schedules.bf16_pairs`), else kept in float32 words
        ``[N/NR, K/2, NR, 2]`` for the kernel that converts both operands as it loads them
        (:func:`bf16_kernel`)."""
        k, n = wv.shape
        pairs = bf16_pair_kernel(self.isa) if k % PAIR_GROUP == 0 else None
        kernel = pairs or bf16_kernel(self.isa)
        nr = int8_tile(kernel, self.isa, n) if kernel else None
        if nr is None:
            return None
        if pairs is not None:
            bits = bf16_round(wv).view(np.uint32) >> 16
            words = (bits[0::2] | (bits[1::2] << 16)).astype(np.uint32)  # [K/2, N]
            packed = words.reshape(k // 2, n // nr, nr, 1).transpose(1, 0, 2, 3)
        else:
            kp = -(-k // 2) * 2
            wpad = np.zeros((kp, n), np.float32)
            wpad[:k] = bf16_round(wv)
            packed = wpad.reshape(kp // 2, 2, n // nr, nr).transpose(2, 0, 3, 1)
        gemm = functools.partial(_int8_gemm, kernel=kernel, mr=dot_gemm_mr(self.isa, _static_rows(x), nr))
        return self.builder_.call_te(gemm, x, relax.const(np.ascontiguousarray(packed)), primfunc_name_hint="bf16_gemm")

    def _pack_int8(self, x, wv):
        kernel = int8_kernel(self.isa)
        k, n = wv.shape
        nr = int8_tile(kernel, self.isa, n) if kernel else None
        if nr is None:
            return None
        kr = kernel.kr
        kp = -(-k // kr) * kr
        wpad = np.zeros((kp, n), np.int8)
        wpad[:k] = wv
        packed = wpad.astype(kernel.b_dtype).reshape(kp // kr, kr, n // nr, nr).transpose(2, 0, 3, 1)
        # M padded up to whole tiles: the tallest that fits the registers unless a shorter one pads
        # less for this M (tiles.dot_gemm_mr)
        mr = dot_gemm_mr(self.isa, _static_rows(x), nr)
        args = [x, relax.const(np.ascontiguousarray(packed))]
        if kernel.a_offset:
            args.append(relax.const((kernel.a_offset * wv.astype(np.int32).sum(axis=0)).astype(np.int32)))
        gemm = functools.partial(_int8_gemm, kernel=kernel, mr=mr)
        return self.builder_.call_te(gemm, *args, primfunc_name_hint="int8_gemm")


@tvm.transform.module_pass(opt_level=0, name="PackMatmulWeights")
class PackMatmulWeights:
    """Rewrite matmuls with constant weights to read panel-packed weights."""

    def __init__(self, target):
        self.isa = vector_isa(target)

    def transform_module(self, mod, _ctx):
        bf16 = str((mod.attrs or {}).get(MATMUL_PRECISION_ATTR, "")) == "bf16"
        return relax.transform.DeadCodeElimination()(rewrite_functions(mod, _Packer(mod, self.isa, bf16)))
