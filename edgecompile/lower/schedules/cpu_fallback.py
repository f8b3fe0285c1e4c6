"""CPU schedule for whatever the other rules decline (full reductions to a scalar, mixed
reduction chains): inline what can be inlined, parallelize the leading spatial loops of every
remaining block when there are any, and unroll reduction loops in vector-width chunks."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

from edgecompile.lower.schedules.isa import vector_isa


class Fallback(CPUScheduleRule):
    """Always applies; the last rule in the list."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            try:
                sch.compute_inline(block)
            except Exception:
                continue
        lanes = vector_isa(target).lanes(32)
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            stmt = sch.get(block)
            loops = sch.get_loops(block)
            kinds = [iv.iter_type for iv in stmt.iter_vars]
            if len(loops) != len(kinds):
                continue
            lead = 0
            while lead < len(kinds) and kinds[lead] == tirx.IterVar.DataPar:
                lead += 1
            if lead and lead < len(loops) + 1:
                outer = sch.fuse(*loops[:lead]) if lead > 1 else loops[0]
                if isinstance(sch.get(outer).extent, tirx.IntImm) and int(sch.get(outer).extent) > 1:
                    sch.parallel(outer)
            inner = sch.get_loops(block)[-1]
            ext = sch.get(inner).extent
            if kinds and kinds[-1] == tirx.IterVar.CommReduce and isinstance(ext, tirx.IntImm) and int(ext) > lanes:
                _, unrolled = sch.split(inner, [None, lanes])
                sch.annotate(unrolled, "pragma_auto_unroll_max_step", lanes)
                sch.annotate(unrolled, "pragma_unroll_explicit", 1)
        return sch
