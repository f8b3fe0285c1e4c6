"""Walking a PrimFunc's statements from Python (TVM 0.27 has no Python TIR visitor), and the
static element count of a shape: what the memory plan and the kernel table read off kernels."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tvm

_CHILDREN = ("body", "block", "then_case", "else_case", "init")


def statements(func) -> Iterator:
    """Every statement of ``func``'s body, each once (blocks through their realize's ``block``)."""
    stack = [func.body]
    while stack:
        node = stack.pop()
        yield node
        for field in _CHILDREN:
            child = getattr(node, field, None)
            if isinstance(child, tvm.tirx.Stmt):
                stack.append(child)
        stack.extend(getattr(node, "seq", None) or ())


def static_count(dims) -> int | None:
    """The product of ``dims`` when all are constants (IntImm), else None."""
    dims = list(dims)
    if not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    return int(np.prod([int(d) for d in dims], dtype=np.int64))
