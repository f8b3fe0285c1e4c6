"""Walking a PrimFunc's statements and expressions from Python (TVM 0.27 has no Python TIR
visitor), rebuilding a scheduled PrimFunc with some block realizes replaced, and the static element
count of a shape: what the memory plan, the kernel table and the schedules read off (or mend in)
kernels."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import tvm

_CHILDREN = ("body", "block", "then_case", "else_case", "init")


def statements(func) -> Iterator:
    """Every statement of ``func``'s body, each once (blocks through their realize's ``block``)."""
    return walk(func.body)


def walk(stmt) -> Iterator:
    """``stmt`` and every statement under it, each once."""
    return _preorder(stmt, _CHILDREN, ("seq",), tvm.tirx.Stmt)


_OPERANDS = ("a", "b", "value", "condition", "true_value", "false_value", "base", "stride")


def subexpressions(expr) -> Iterator:
    """``expr`` and every expression under it (operands, call arguments, loaded indices)."""
    return _preorder(expr, _OPERANDS, ("args", "indices"), tvm.ir.expr.Expr)


def _preorder(root, fields: tuple[str, ...], lists: tuple[str, ...], kind) -> Iterator:
    """``root`` and every node of type ``kind`` reachable through its ``fields`` (one child each)
    and ``lists`` (sequences of children)."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        for field in fields:
            child = getattr(node, field, None)
            if isinstance(child, kind):
                stack.append(child)
        for field in lists:
            stack.extend(c for c in (getattr(node, field, None) or ()) if isinstance(c, kind))


def replace_realizes(func, replace: Callable):
    """``func`` with every block realize ``r`` replaced by ``replace(r)`` (None keeps it), innermost
    first. Only the statements a scheduled, not yet lowered PrimFunc holds are rebuilt (loops,
    sequences, blocks and realizes); any other statement that encloses a block is a ``ValueError``,
    so no realize is ever skipped silently."""
    return func.with_body(_rebuilt(func.body, replace))


def _rebuilt(node, replace: Callable):
    from tvm import s_tir, tirx

    if isinstance(node, s_tir.SBlockRealize):
        b = node.block
        block = s_tir.SBlock(
            b.iter_vars, b.reads, b.writes, b.name_hint, _rebuilt(b.body, replace),
            b.init, b.alloc_buffers, b.match_buffers, b.annotations,
        )  # fmt: skip
        realize = s_tir.SBlockRealize(node.iter_values, node.predicate, block)
        return replace(realize) or realize
    if isinstance(node, tirx.For):
        body = _rebuilt(node.body, replace)
        return tirx.For(
            node.loop_var, node.min, node.extent, node.kind, body, node.thread_binding, node.annotations, node.step
        )
    if isinstance(node, tirx.SeqStmt):
        return tirx.SeqStmt([_rebuilt(s, replace) for s in node.seq])
    if any(isinstance(s, s_tir.SBlockRealize) for s in walk(node)):
        raise ValueError(f"cannot rebuild a {type(node).__name__} that encloses blocks")
    return node


def static_count(dims) -> int | None:
    """The product of ``dims`` when all are constants (IntImm), else None."""
    dims = list(dims)
    if not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    return int(np.prod([int(d) for d in dims], dtype=np.int64))
