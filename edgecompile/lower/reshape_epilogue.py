"""Let a kernel-left convolution's GEMM take its bias and activation into its tile epilogue.

A convolution with the kernel on the left (:mod:`edgecompile.passes.conv_gemm`) is ``W[O, K] @
cols[K, H*W]`` and a reshape to ``[1, O, H, W]``; the bias add and activation come after the
reshape. TVM's FuseOps fuses a GEMM only with *elementwise* consumers, and a reshape is
*injective*, so the bias and activation ran as a kernel of their own over the whole output
(MobileViT-XS, Zen 4: its 1x1 convolutions' SiLU passes ~2.5 ms of a 34 ms run). Element order is
unchanged by such a reshape, so it is marked elementwise for FuseOps (on a copy of its function,
for that call only) when the matmul rule's tiles map onto the image: its ``NR``-wide column tile
(:func:`edgecompile.lower.schedules.tiles.gemm_nr`) either whole rows (``W % NR == 0``) or a
whole number of rows (``NR % W == 0``). Otherwise the epilogue computed per tile would read
across tiles (measured: wrong values at ``W = 40``, ``NR = 64``), and the reshape stays injective.
"""

from __future__ import annotations

import tvm
from tvm import relax

from edgecompile.ir.ops import static_shape
from edgecompile.lower.schedules.isa import vector_isa
from edgecompile.lower.schedules.tiles import gemm_nr
from edgecompile.passes.rewrite import rewrite_functions

ELEMWISE = 0  # TVM's OpPatternKind kElemWise


def _image_split(src: list[int], dst: list[int]) -> int | None:
    """The image width ``W`` when ``dst`` is ``[1, O, H, W]`` and ``src`` is ``[O, H*W]``."""
    if len(src) != 2 or len(dst) != 4 or dst[0] != 1 or dst[1] != src[0] or dst[2] * dst[3] != src[1]:
        return None
    return dst[3]


@relax.expr_functor.mutator
class _Marker(relax.PyExprMutator):
    def __init__(self, mod, isa):
        super().__init__(mod)
        self.mod_, self.isa = mod, isa

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if getattr(call.op, "name", "") != "relax.call_tir" or not call.args[0].name_hint.startswith("reshape"):
            return call
        (src,) = call.args[1].fields
        producer = self.lookup_binding(src) if isinstance(src, relax.Var) else None
        if not self._is_float_gemm(producer):
            return call
        src_shape = static_shape(src) or []
        width = _image_split(src_shape, static_shape(call) or [])
        if width is None:
            return call
        nr = gemm_nr(self.isa, src_shape[1], 32)
        if src_shape[1] % nr or (width % nr and nr % width):
            return call
        func = self.mod_[call.args[0]].with_attr("op_pattern", ELEMWISE)
        gv = self.builder_.add_func(func, call.args[0].name_hint + "_flat")
        return relax.Call(call.op, [gv, *call.args[1:]], call.attrs, call.ty_args)

    def _is_float_gemm(self, producer) -> bool:
        if not isinstance(producer, relax.Call) or getattr(producer.op, "name", "") != "relax.call_tir":
            return False
        if not producer.args[0].name_hint.startswith("matmul"):
            return False
        return str(producer.ty.dtype) == "float32"


@tvm.transform.module_pass(opt_level=0, name="FlatReshapeAsElementwise")
class FlatReshapeAsElementwise:
    """Mark ``[O, H*W] -> [1, O, H, W]`` reshapes of float GEMM outputs elementwise where tiles allow."""

    def __init__(self, target):
        self.isa = vector_isa(target)

    def transform_module(self, mod, _ctx):
        return rewrite_functions(mod, _Marker(mod, self.isa))
