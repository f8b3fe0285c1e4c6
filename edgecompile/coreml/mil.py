"""Relax ``main`` to a MIL program: its dataflow is walked binding by binding and each Relax op is
emitted through :data:`edgecompile.coreml.ops.OPS`. An op without a mapping is a
:class:`~edgecompile.errors.BuildError` naming the op and its bindings. Op and const names are
derived from the Relax bindings, so the same model gives the same program."""

from __future__ import annotations

import re

import numpy as np

from edgecompile.coreml.ops import NP_DTYPE, OPS, call_name, flatten, mil_dtype, static_shape, tir_kernel
from edgecompile.errors import BuildError
from edgecompile.ir.walk import bindings


def to_mil(mod, input_names: list[str], output_names: list[str], opset, fp16: bool = False):
    """The MIL program of ``mod``'s ``main`` (after ``FoldConstant``) with the given input and output names;
    ``fp16`` clamps float constants to float16's range (a -3.4e38 mask value stays finite, as in float32)."""
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program, types

    func = mod["main"]
    _check_supported(mod)
    specs = {}
    for p, name in zip(func.params, input_names):
        dt = mil_dtype(str(p.ty.dtype), name)
        specs[name] = mb.placeholder(shape=static_shape(p.ty), dtype=types.string_to_builtin(dt))
    with Function(specs, opset_version=opset) as mil_func:
        low = _Lowerer(mb, mod, set(input_names) | set(output_names), fp16)
        for p, name in zip(func.params, input_names):
            low.env[p] = mil_func.inputs[name]
        for b in bindings(func):
            low.env[b.var] = _checked(low.value(b.value, _safe(b.var.name)), b.var)
        leaves = flatten(low.value(func.body.body, "output"))
        if len(leaves) != len(output_names):
            raise BuildError(f"the model returns {len(leaves)} tensors, its outputs are {output_names}")
        outs = []
        for leaf, name in zip(leaves, output_names):
            v = low.var(leaf, name + "_value")
            if v.dtype == types.bool:
                v = mb.cast(x=v, dtype="int32", name=low.name(name + "_int"))
            if v.op is None or v in outs:  # a model input, or a tensor returned twice: copy it
                v = mb.identity(x=v, name=name)
            v.set_name(name)
            outs.append(v)
        mil_func.set_outputs(outs)
    prog = Program()
    prog.add_function("main", mil_func)
    return prog


def _checked(v, var):
    """``v`` (the MIL value of Relax ``var``) after checking that MIL inferred ``var``'s static shape."""
    from tvm import relax

    ty = var.ty
    if isinstance(ty, relax.TensorType) and hasattr(v, "op") and ty.shape is not None:
        want = tuple(int(getattr(d, "value", -1)) for d in ty.shape.values)
        if -1 not in want and tuple(v.shape) != want:
            raise BuildError(
                f"Core ML export: {var.name} has shape {tuple(v.shape)} in the ML Program but {want} in Relax "
                "(a bug of the op mapping; compile for a TVM target meanwhile)"
            )
    return v


def _check_supported(mod) -> None:
    """Every op of ``main`` has a converter in :data:`OPS`, else one :class:`BuildError` listing them all."""
    from tvm import relax

    missing: dict[str, list[str]] = {}
    for b in bindings(mod["main"]):
        v = b.value
        if isinstance(v, relax.Call):
            name = call_name(v)
            if name == "relax.call_tir" and tir_kernel(mod, v) is None:
                missing.setdefault(f"relax.call_tir of kernel {v.args[0].name_hint}", []).append(b.var.name)
            elif name not in OPS:
                missing.setdefault(name, []).append(b.var.name)
    if missing:
        shown = "; ".join(
            f"{op} ({len(vs)}x, e.g. binding {vs[0]})" for op, vs in sorted(missing.items(), key=lambda kv: kv[0])
        )
        raise BuildError(
            f"the Core ML export has no mapping for {shown}: compile for a TVM target (e.g. --target "
            "aarch64-linux or native), or re-export the model without these ops; the ops Core ML export "
            "supports are listed in edgecompile.coreml.export.OPS"
        )


def _safe(name: str) -> str:
    return re.sub(r"\W", "_", name) or "v"


class _Lowerer:
    """Emits MIL ops for Relax values; ``env`` maps Relax vars to MIL vars (or lists of them)."""

    def __init__(self, mb, mod, reserved: set[str], fp16: bool = False):
        self.mb = mb
        self.mod = mod
        self.fp16 = fp16
        self.env: dict = {}
        self.used = set(reserved)
        self.consts: dict = {}

    def name(self, base: str) -> str:
        """A fresh op name starting with ``base``."""
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def var(self, v, name: str):
        """A MIL var for ``v``: a MIL var already, or a numpy array made a named const."""
        if isinstance(v, (np.ndarray, np.generic)):
            return self.mb.const(val=np.asarray(v), name=self.name(name))
        return v

    def value(self, expr, name: str):
        from tvm import relax
        from tvm.ir.expr import Constant

        if isinstance(expr, relax.Var):
            return self.env[expr]
        if isinstance(expr, Constant):
            v = expr.value
            arr = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
            arr = arr.astype(NP_DTYPE[mil_dtype(str(arr.dtype), name)])
            if self.fp16 and arr.dtype == np.float32:
                big = float(np.finfo(np.float16).max)
                arr = np.clip(arr, -big, big).astype(np.float32)
            return arr
        if isinstance(expr, relax.Tuple):
            return [self.value(f, f"{name}_{i}") for i, f in enumerate(expr.fields)]
        if isinstance(expr, relax.TupleGetItem):
            return self.value(expr.tuple_value, name)[expr.index]
        if isinstance(expr, relax.Call):
            return OPS[call_name(expr)](self, expr, name)
        raise BuildError(f"Core ML export cannot convert a {type(expr).__name__} ({name})")

    def arg(self, call, i: int, name: str):
        """Argument ``i`` of ``call`` as a MIL var (consts are created once per Relax constant)."""
        from tvm.ir.expr import Constant

        a = call.args[i]
        if isinstance(a, Constant):
            if a not in self.consts:
                self.consts[a] = self.var(self.value(a, f"{name}_c{i}"), f"{name}_c{i}")
            return self.consts[a]
        return self.var(self.value(a, f"{name}_a{i}"), f"{name}_a{i}")
