"""Shared plumbing for our Relax graph rewrites."""

from __future__ import annotations

from tvm import relax


def rewrite_functions(mod, mutator: relax.PyExprMutator):
    """Apply ``mutator`` to every Relax function of ``mod`` and return the rewritten module."""
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()


def emit_opaque_kernel(bb: relax.BlockBuilder, x: relax.Expr, a, out, name: str, attrs: dict | None = None):
    """``out`` (a TE compute over the placeholder ``a`` standing for ``x``) as a kernel of its own,
    marked opaque (``op_pattern`` 8) so fusion keeps it apart; ``attrs`` are added to its PrimFunc."""
    from tvm import te

    func = te.create_prim_func([a, out]).without_attr("global_symbol")
    func = func.with_attr({"op_pattern": 8, **(attrs or {})})
    gv = bb.add_func(func, name)
    shape = [int(d) for d in out.shape]
    return bb.emit(relax.call_tir(gv, [x], relax.TensorType(shape, str(out.dtype))))
