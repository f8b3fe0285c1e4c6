"""Pack constant GEMM weights into the layout our CPU micro-kernel reads.

``matmul(x, W)`` with a constant ``W[K, N]`` becomes a GEMM over ``Wp[N / NR, K, NR]`` (done once,
at compile time, with numpy): each ``NR``-wide column panel of ``W`` is contiguous, so the
micro-kernel streams it with unit stride instead of jumping a whole row of ``W`` per step (a
new cache line, and often a new page, every ``k``). ``NR`` is the tile width the CPU matmul rule
chooses for the target (:func:`edgecompile.lower.schedules.tiles.gemm_tile`), so the rule sees
``Wp[j // NR, k, j % NR]`` become ``Wp[j0, k, j1]`` after it splits ``j``.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te

from edgecompile.lower.rewrite import rewrite_functions
from edgecompile.lower.schedules.isa import vector_isa
from edgecompile.lower.schedules.tiles import gemm_nr


def _packed_matmul(x, wp):
    *batch, m, k_dim = x.shape
    nb, _, nr = wp.shape
    k = te.reduce_axis((0, k_dim), name="k")

    def body(*idx):
        j = idx[-1]
        return te.sum(x[(*idx[:-1], k)].astype(wp.dtype) * wp[j // nr, k, j % nr], axis=k)

    return te.compute((*batch, m, nb * nr), body, name="matmul")


@relax.expr_functor.mutator
class _Packer(relax.PyExprMutator):
    def __init__(self, mod, isa):
        super().__init__(mod)
        self.isa = isa

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if getattr(call.op, "name", "") != "relax.matmul" or not isinstance(call.args[1], tvm.ir.expr.Constant):
            return call
        x, w = call.args
        wv = w.value.numpy() if hasattr(w.value, "numpy") else None
        if wv is None:
            return call
        if wv.ndim != 2 or wv.dtype != np.float32 or len(x.ty.shape.values) < 2:
            return call
        if str(x.ty.dtype) != "float32" or str(call.attrs.out_dtype) not in ("", "void", "None", "float32"):
            return call
        k, n = wv.shape
        nr = gemm_nr(self.isa, n, 32)
        if n % nr or n < nr:
            return call
        packed = np.ascontiguousarray(wv.reshape(k, n // nr, nr).transpose(1, 0, 2))
        return self.builder_.call_te(_packed_matmul, x, relax.const(packed), primfunc_name_hint="matmul_packed")


@tvm.transform.module_pass(opt_level=0, name="PackMatmulWeights")
class PackMatmulWeights:
    """Rewrite matmuls with constant weights to read panel-packed weights."""

    def __init__(self, target):
        self.isa = vector_isa(target)

    def transform_module(self, mod, _ctx):
        return relax.transform.DeadCodeElimination()(rewrite_functions(mod, _Packer(mod, self.isa)))
