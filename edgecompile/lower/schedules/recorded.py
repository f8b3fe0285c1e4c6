"""Apply schedule rules as dlight's ``ApplyDefaultSchedule`` does, and record which rule scheduled
each kernel (PrimFunc attribute :data:`RULE_ATTR`), so the artifact can say it: ``inspect
--kernels``, ``bench --profile`` and the compile-time warning for kernels left to the fallback.

Kernels scheduled before the rules run are marked by :func:`mark_scheduled` with their origin:
``hand-written`` (ours, pre-scheduled: integer square root, hash attention) or ``tuned`` (a
MetaSchedule database record).
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx

RULE_ATTR = "edgecompile.schedule_rule"
FALLBACK = "fallback"


def rule_name(rule) -> str:
    """``ours:Matmul``, ``dlight:GEMV``, or :data:`FALLBACK` for the last-resort rule."""
    cls = type(rule).__name__
    if cls == "Fallback":
        return FALLBACK
    module = type(rule).__module__
    return f"{'dlight' if module.startswith('tvm.') else 'ours'}:{cls}"


@tvm.transform.module_pass(opt_level=0, name="ApplyRulesRecorded")
class ApplyRulesRecorded:
    """Schedule every unscheduled PrimFunc with the first rule that accepts it; record the rule."""

    def __init__(self, *rules):
        self.rules = list(rules)

    def transform_module(self, mod, _ctx):
        updated = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _scheduled(func):
                continue
            if not _has_blocks(func):  # TOPI's ir_builder kernels (cumsum, sort): plain loops, final as they are
                updated[gv] = func.with_attr("tirx.is_scheduled", True).with_attr(RULE_ATTR, "hand-written")
                continue
            target = func.attrs.get("target") if func.attrs else None
            target = target or tvm.target.Target.current(allow_none=False)
            for rule in self.rules:
                space = rule.apply(func, target, False)
                if space is None:
                    continue
                sch = space if isinstance(space, s_tir.Schedule) else space[0]
                updated[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr(RULE_ATTR, rule_name(rule))
                break
        for gv, func in updated.items():
            mod[gv] = func
        return mod


def _has_blocks(func) -> bool:
    try:
        s_tir.Schedule(func).get_sblock("root")
    except Exception:  # no root block: nothing a rule could schedule
        return False
    return True


def _scheduled(func) -> bool:
    return bool(func.attrs) and "tirx.is_scheduled" in func.attrs


def mark_scheduled(origin: str) -> tvm.transform.Pass:
    """A pass recording ``origin`` (``hand-written``, ``tuned``) on scheduled kernels without a record."""

    def mark(mod, _ctx):
        for gv, func in list(mod.functions_items()):
            if isinstance(func, tirx.PrimFunc) and _scheduled(func) and RULE_ATTR not in func.attrs:
                mod[gv] = func.with_attr(RULE_ATTR, origin)
        return mod

    return tvm.transform.module_pass(mark, opt_level=0, name=f"MarkScheduled_{origin}")
