"""Loop helpers shared by our CPU schedule rules."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target
from tvm.tirx.analysis import undefined_vars


class GuardedRule(CPUScheduleRule):
    """A CPU rule whose ``_schedule(func, target)`` may decline (None) or fail on a shape it does
    not take; either way the next rule in the list gets the function."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        try:
            return self._schedule(func, target)
        except Exception:  # noqa: BLE001 - a schedule primitive refused this shape: declined
            return None

    def _schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | None:
        raise NotImplementedError


def uses(expr, var) -> bool:
    """Whether the TIR expression ``expr`` reads the variable ``var``."""
    return any(v.same_as(var) for v in undefined_vars(expr))


def extent(sch: s_tir.Schedule, loop) -> int | None:
    """The loop's static trip count, or None when it is symbolic."""
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def vectorize_innermost(sch: s_tir.Schedule, block, vw: int, unroll: bool = True) -> None:
    """Vectorize the block's innermost loop by ``vw`` lanes: split into whole vectors (their loop
    unrolled when ``unroll``) or, if it is at most ``vw`` long, vectorize it whole."""
    loop = sch.get_loops(block)[-1]
    ext = extent(sch, loop)
    if ext is None or ext <= 1:
        return
    if ext > vw and ext % vw == 0:
        outer, inner = sch.split(loop, [None, vw])
        if unroll:
            sch.unroll(outer)
        sch.vectorize(inner)
    elif ext <= vw:
        sch.vectorize(loop)


def vectorize_ragged(sch: s_tir.Schedule, block, vw: int) -> None:
    """The block's innermost loop in vectors; a ragged loop's last, partial vector is guarded by
    the split (:func:`vectorize_innermost` leaves a ragged loop scalar)."""
    loop = sch.get_loops(block)[-1]
    ext = extent(sch, loop)
    if ext and ext > vw and ext % vw:
        sch.vectorize(sch.split(loop, [None, vw])[1])
    else:
        vectorize_innermost(sch, block, vw, unroll=False)
