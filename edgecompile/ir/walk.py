"""Walking a Relax function binding by binding, re-emitting each through a BlockBuilder.

Our passes rewrite ``main`` as an interpreter would: visit every binding in order and emit what
replaces it. :func:`substitute` rebuilds one binding's value over new variables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import tvm
from tvm import relax


def substitute(expr, mapping: dict):
    """``expr`` with every variable replaced by ``mapping[var]`` (ANF values: calls, tuples, ...)."""
    if isinstance(expr, relax.Var):
        return mapping.get(expr, expr)
    if isinstance(expr, relax.Call):
        args = [substitute(a, mapping) for a in expr.args]
        return relax.Call(expr.op, args, expr.attrs, expr.ty_args)
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([substitute(f, mapping) for f in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(substitute(expr.tuple_value, mapping), expr.index)
    if not relax.analysis.free_vars(expr):  # constants, shapes, prim values, globals
        return expr
    raise NotImplementedError(f"cannot rewrite a {type(expr).__name__} binding")


def bindings(func: relax.Function) -> Iterator[relax.Binding]:
    """Every binding of ``func``'s body, in order (all blocks)."""
    body = func.body
    for block in body.blocks:
        yield from block.bindings


def emit_binding(bb: relax.BlockBuilder, binding, value):
    """Emit ``value`` for ``binding`` (a plain binding or a match_cast), keeping its name."""
    if isinstance(binding, relax.MatchCast):
        return bb.match_cast(value, binding.ty, name_hint=binding.var.name)
    return bb.emit(value, name_hint=binding.var.name)


def rebuild(func: relax.Function, emit=None, outputs: list | None = None, extra_params: list | None = None):
    """``func`` re-emitted binding by binding into a new module's ``main``. ``emit(bb, binding,
    mapping)`` may emit a replacement for a binding and return its var (None: copy the binding);
    ``outputs`` (vars of ``func``) makes ``main`` return ``(original outputs, *outputs)``;
    ``extra_params`` (new vars) are appended to ``main``'s parameters."""
    bb = relax.BlockBuilder()
    params = [relax.Var(p.name, p.ty) for p in func.params]
    with bb.function("main", [*params, *(extra_params or [])], attrs=dict(func.attrs) if func.attrs else None):
        with bb.dataflow():
            m = dict(zip(func.params, params))
            for b in bindings(func):
                new = emit(bb, b, m) if emit is not None else None
                m[b.var] = new if new is not None else emit_binding(bb, b, substitute(b.value, m))
            ret = substitute(func.body.body, m)
            if outputs is not None:
                ret = relax.Tuple([ret, *[m[v] for v in outputs]])
            out = bb.emit_output(ret)
        bb.emit_func_output(out)
    return bb.get()


def matched_vars(a: relax.Function, b: relax.Function) -> dict | None:
    """``{var of a: var of b}`` binding by binding, when ``b`` is ``a``'s graph at other static
    shapes (the same ops in the same order; the same model imported at another length); None when
    the graphs differ."""
    from edgecompile.ir.ops import op_name

    ba, bb_ = list(bindings(a)), list(bindings(b))
    if len(a.params) != len(b.params) or len(ba) != len(bb_):
        return None
    mapping = dict(zip(a.params, b.params))
    for x, y in zip(ba, bb_):
        if type(x.value) is not type(y.value) or op_name(x.value) != op_name(y.value):
            return None
        mapping[x.var] = y.var
    return mapping


def carry_functions(out: tvm.IRModule, src: tvm.IRModule) -> tvm.IRModule:
    """``out`` plus every function of ``src`` it lacks: the TIR kernels that importers emit for
    some ops (ONNX ``Clip`` becomes ``call_tir(maximum, ...)``), which a re-emitted ``main`` still
    calls."""
    have = {gv.name_hint for gv in out.functions}
    for gv, f in src.functions.items():
        if gv.name_hint not in have:
            out[gv] = f
    return out


def building_with(build: Callable[[tvm.IRModule], object], src: tvm.IRModule) -> Callable[[tvm.IRModule], object]:
    """``build`` for modules re-emitted from ``src``'s ``main``: each gets ``src``'s other functions."""
    return lambda m: build(carry_functions(m, src))
