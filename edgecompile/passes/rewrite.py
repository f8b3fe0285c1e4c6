"""Shared plumbing for our Relax graph rewrites."""

from __future__ import annotations

from tvm import relax


def rewrite_functions(mod, mutator: relax.PyExprMutator):
    """Apply ``mutator`` to every Relax function of ``mod`` and return the rewritten module."""
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()
