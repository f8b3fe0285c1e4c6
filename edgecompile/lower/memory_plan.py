"""What a built model needs in memory, read off the module after Relax's static memory planning.

``StaticPlanBlockMemory`` gives every intermediate tensor of ``main`` a slot in a few storages
whose sizes are fixed at compile time; they are allocated on the first run from the VM's pooled
allocator and reused by every later run (no allocation on the hot path). Their sum is the
activation *arena*. Tensors that leave ``main`` (its outputs) are not planned: they are allocated
per run, since the caller keeps them. Kernels allocate their own scratch (packed operands, row
buffers) through TVM's workspace pool, which also recycles them; :func:`memory_plan` reports the
largest kernel's scratch, which bounds the pool on one thread (threads each take their slices).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


def memory_plan(mod) -> dict:
    """``{"arena_bytes", "storages", "outputs_bytes", "kernel_scratch_bytes"}`` of a planned module."""
    storages: list[int] = []
    outputs = 0

    def visit(expr) -> None:
        nonlocal outputs
        if not isinstance(expr, relax.Call) or not hasattr(expr.op, "name"):
            return
        if expr.op.name == "relax.memory.alloc_storage":
            storages.append(_static(expr.args[0]) or 0)
        elif expr.op.name == "relax.builtin.alloc_tensor":
            count = _static(expr.args[0])
            dtype = expr.args[1].value if hasattr(expr.args[1], "value") else None
            if count is not None and dtype:
                outputs += count * _itemsize(str(dtype))

    relax.analysis.post_order_visit(mod["main"], visit)
    return {
        "arena_bytes": sum(storages),
        "storages": len(storages),
        "outputs_bytes": outputs,
        "kernel_scratch_bytes": max((_scratch(f) for f in mod.functions.values() if _is_prim(f)), default=0),
    }


def _static(shape) -> int | None:
    """The element product of a ``R.shape([...])`` of constants (None if symbolic)."""
    values = getattr(shape, "values", None)
    if values is None or not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        return None
    return int(np.prod([int(v) for v in values], dtype=np.int64))


def _itemsize(dtype: str) -> int:
    bits = tvm.runtime.DataType(dtype).bits * tvm.runtime.DataType(dtype).lanes
    return max(1, bits // 8)


def _is_prim(func) -> bool:
    return isinstance(func, tvm.tirx.PrimFunc)


def _scratch(func) -> int:
    """Bytes of the global-scope buffers a kernel allocates (static shapes; symbolic ones count 0)."""
    total = 0
    stack = [func.body]
    while stack:  # TVM 0.27 has no Python TIR visitor: walk the statement fields that hold statements
        node = stack.pop()
        for buf in getattr(node, "alloc_buffers", None) or ():
            dims = list(buf.shape)
            if buf.scope() in ("global", "") and all(isinstance(d, tvm.tirx.IntImm) for d in dims):
                total += int(np.prod([int(d) for d in dims], dtype=np.int64)) * _itemsize(str(buf.dtype))
        for field in ("body", "block", "then_case", "else_case", "init"):
            child = getattr(node, field, None)
            if isinstance(child, tvm.tirx.Stmt):
                stack.append(child)
        stack.extend(getattr(node, "seq", None) or ())
    return total
