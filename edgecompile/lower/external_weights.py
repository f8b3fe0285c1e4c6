"""Weights out of the library: the constant tensors of ``main`` become trailing parameters.

TVM serializes a Relax module's constants into the library; at load the VM deserializes them
into heap tensors while the library's copy stays mapped (the weights twice, and a larger
transient). With :class:`LiftWeights` at the end of the Relax pipeline (after our passes packed
the GEMM weights into the layouts the kernels read), every constant of at least ``min_bytes``
becomes a parameter of ``main`` after the model's inputs, and its final array is handed to a
sink. The artifact writes them into ``weights.bin`` (:mod:`edgecompile.artifact.weights_blob`);
the runtimes memory-map that file and pass views of it, so a weight is resident once, as page
cache pages shared with every process that maps the same file.

Small constants (scalars, short vectors) stay in the library: they cost nothing and keep the
argument list short.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

MIN_BYTES = 256


@dataclass
class LiftedWeights:
    """The sink of :class:`LiftWeights`: the arrays of ``main``'s weight parameters, in order."""

    arrays: list[np.ndarray] = field(default_factory=list)


@relax.expr_functor.mutator
class _ConstantLifter(relax.PyExprMutator):
    def __init__(self, mod, min_bytes: int):
        super().__init__(mod)
        self.min_bytes = min_bytes
        self.params: list[relax.Var] = []
        self.arrays: list[np.ndarray] = []
        self._seen: dict = {}  # Constant node -> its parameter (TVM objects hash by identity)

    def visit_generic_const_(self, const):
        value = getattr(const, "value", None)
        if value is None or not hasattr(value, "shape"):
            return const
        if const in self._seen:
            return self._seen[const]
        array = value.numpy()
        if array.nbytes < self.min_bytes:
            return const
        var = relax.Var(f"edgecompile_weight{len(self.params)}", const.ty)
        self.params.append(var)
        self.arrays.append(np.ascontiguousarray(array))
        self._seen[const] = var
        return var


@tvm.transform.module_pass(opt_level=0, name="LiftWeights")
class LiftWeights:
    """Constants of ``main`` of at least ``min_bytes`` -> trailing parameters; arrays to ``sink``."""

    def __init__(self, sink: LiftedWeights, min_bytes: int = MIN_BYTES):
        self.sink = sink
        self.min_bytes = min_bytes

    def transform_module(self, mod, _ctx):
        func = mod["main"]
        lifter = _ConstantLifter(mod, self.min_bytes)
        body = lifter.visit_expr(func.body)
        if not lifter.params:
            self.sink.arrays = []
            return mod
        new = relax.Function(list(func.params) + lifter.params, body, func.ret_ty, func.is_pure, func.attrs)
        # the inputs come first; the rest are the same tensors every call (what lets a CUDA graph
        # capture the kernels that read them: relax.transform.RewriteCUDAGraph)
        new = new.with_attr("num_input", len(func.params))
        self.sink.arrays = lifter.arrays
        out = mod.clone()  # not in place: a tap before this pass keeps the module it saw
        out["main"] = new
        return out
