"""Rewrite non-overlapping convolutions (ViT's patch embedding) as a GEMM.

A ``conv2d`` whose stride equals its kernel, with no padding, no dilation and one group, is a
matrix product of the image cut into patches with the flattened kernel:
``x[N, C, H, W] -> patches[N * H/p * W/q, C * p * q] @ W[O, C * p * q]^T``. The rewrite is exact
(only the summation order changes) and lets the GEMM rule and weight packing handle it; TVM's
CPU conv2d is an unscheduled seven-deep loop nest.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from edgecompile.passes.rewrite import rewrite_functions


@relax.expr_functor.mutator
class _Patchify(relax.PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        if getattr(call.op, "name", "") != "relax.nn.conv2d":
            return call
        x, w = call.args
        a = call.attrs
        if not isinstance(w, tvm.ir.expr.Constant) or not hasattr(w.value, "numpy"):
            return call
        if str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW" or str(a.out_layout) not in ("NCHW", ""):
            return call
        wv = w.value.numpy()
        o, c, p, q = wv.shape
        stride = [int(v) for v in a.strides]
        if (
            int(a.groups) != 1
            or p * q == 1  # a 1x1 convolution is conv_gemm's (over large images: no copy, no transposes)
            or stride != [p, q]
            or any(int(v) != 0 for v in a.padding)
            or any(int(v) != 1 for v in a.dilation)
        ):
            return call
        shape = [int(v) for v in x.ty.shape.values]
        if len(shape) != 4 or shape[2] % p or shape[3] % q:
            return call
        n, _, h, wd = shape
        hp, wq = h // p, wd // q
        op = relax.op
        t = op.reshape(x, [n, c, hp, p, wq, q])
        t = op.permute_dims(t, [0, 2, 4, 1, 3, 5])
        t = op.reshape(t, [n * hp * wq, c * p * q])
        kernel = relax.const(np.ascontiguousarray(wv.reshape(o, c * p * q).T))
        y = op.matmul(t, kernel)
        y = op.reshape(y, [n, hp, wq, o])
        return op.permute_dims(y, [0, 3, 1, 2])


@tvm.transform.module_pass(opt_level=0, name="PatchifyConv")
class PatchifyConv:
    """Turn stride-equals-kernel convolutions with constant weights into GEMMs."""

    def transform_module(self, mod, _ctx):
        return rewrite_functions(mod, _Patchify(mod))


def linear_form(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` as the stages find its linear layers: constants folded (exporters write Linear
    weights as ``permute_dims(W)``) and patch-embedding convolutions as GEMMs. A stage's plan and
    its replay on another build of a ranged artifact both start here, so they see the same graph."""
    return PatchifyConv()(relax.transform.FoldConstant()(mod))
