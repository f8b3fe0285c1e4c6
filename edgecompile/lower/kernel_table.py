"""The kernels of a built model, read off the module after lowering: per kernel its name (the
library symbol the VM calls), the schedule rule that produced it
(:mod:`edgecompile.lower.schedules.recorded`), how often ``main`` calls it, and an estimate of its
arithmetic: the block instances of its loop nest (``M*N*K`` for a GEMM's update block), counted
twice for blocks with a reduction (a multiply and an add). ``bench --profile`` divides that by the
measured time for GOP/s; the compile-time warning for kernels left to the fallback schedule quotes
their share of the model's operations."""

from __future__ import annotations

import tvm
from tvm import relax

from edgecompile.lower.schedules.recorded import FALLBACK, RULE_ATTR
from edgecompile.lower.tir_walk import statements, static_count


def kernel_table(mod, default_rule: str = "unscheduled") -> list[dict]:
    """``[{"name", "rule", "calls", "ops"}]`` of the PrimFuncs ``main`` calls, most ops first
    (``ops`` per call; None where a loop extent is symbolic). Kernels without a recorded rule
    (GPU builds: TVM's dlight rules) get ``default_rule``."""
    calls: dict[str, int] = {}

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.GlobalVar):
            calls[expr.op.name_hint] = calls.get(expr.op.name_hint, 0) + 1

    relax.analysis.post_order_visit(mod["main"], visit)
    rows = []
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or gv.name_hint not in calls:
            continue
        rule = str(func.attrs[RULE_ATTR]) if func.attrs and RULE_ATTR in func.attrs else default_rule
        rows.append({"name": _symbol(gv, func), "rule": rule, "calls": calls[gv.name_hint], "ops": estimated_ops(func)})
    return sorted(rows, key=lambda r: (-(r["ops"] or 0) * r["calls"], r["name"]))


def fallback_share(kernels: list[dict]) -> list[tuple[str, float]]:
    """``(kernel, share of the model's estimated operations)`` for kernels on the fallback schedule."""
    total = sum((k["ops"] or 0) * k["calls"] for k in kernels) or 1
    return [(k["name"], (k["ops"] or 0) * k["calls"] / total) for k in kernels if k["rule"] == FALLBACK]


def _symbol(gv, func) -> str:
    symbol = func.attrs.get("global_symbol") if func.attrs else None
    return str(symbol) if symbol is not None else gv.name_hint


def estimated_ops(func) -> int | None:
    """Operations of one call of ``func`` (module doc); None where a loop extent is symbolic."""
    total = 0
    for node in statements(func):
        block = getattr(node, "block", None)
        if isinstance(block, tvm.tirx.Stmt) and getattr(block, "iter_vars", None):
            count = static_count(iv.dom.extent for iv in block.iter_vars)
            if count is None:
                return None
            reduces = any(iv.iter_type == tvm.tirx.IterVar.CommReduce for iv in block.iter_vars)
            total += count * (2 if reduces else 1) * _tensorized_step(block)
    return total


def _tensorized_step(block) -> int:
    """Products per instance of a block ``tensorize`` made (``<name>_o``: one instruction step of a
    dot-product GEMM, ``LANES x KR`` of them): its largest operand region, twice that where the
    region holds ``uint32`` bf16 pairs (:mod:`~edgecompile.lower.schedules.bf16_pairs`: two products
    a word); 1 for any other block. Without it an int8 GEMM's GOP/s read 1/64 of the truth."""
    if not block.name_hint.endswith("_o"):
        return 1
    sizes = [
        (static_count(r.extent for r in rd.region) or 1) * (2 if str(rd.source.dtype) == "uint32" else 1)
        for rd in block.reads
    ]
    return max(sizes, default=1)
