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

import tvm
from tvm import relax

from edgecompile.lower.tir_walk import statements, static_count


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
    return None if values is None else static_count(values)


def _itemsize(dtype: str) -> int:
    bits = tvm.runtime.DataType(dtype).bits * tvm.runtime.DataType(dtype).lanes
    return max(1, bits // 8)


def _is_prim(func) -> bool:
    return isinstance(func, tvm.tirx.PrimFunc)


def _scratch(func) -> int:
    """Bytes of the global-scope buffers a kernel allocates (static shapes; symbolic ones count 0)."""
    total = 0
    for node in statements(func):
        for buf in getattr(node, "alloc_buffers", None) or ():
            count = static_count(buf.shape)
            if buf.scope() in ("global", "") and count is not None:
                total += count * _itemsize(str(buf.dtype))
    return total
