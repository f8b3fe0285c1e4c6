"""Walking a Relax function binding by binding, re-emitting each through a BlockBuilder.

Our passes rewrite ``main`` as an interpreter would: visit every binding in order and emit what
replaces it. :func:`substitute` rebuilds one binding's value over new variables.
"""

from __future__ import annotations

from collections.abc import Iterator

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
