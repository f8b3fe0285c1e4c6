"""CPU schedule for injective kernels (elementwise chains, broadcasts, transposes, reshapes):
inline the chain into its last block, then parallelize the outer part of the fused loop nest and
vectorize the innermost dimension."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

from edgecompile.lower.schedules.isa import vector_isa

MIN_PARALLEL_ELEMENTS = 16384  # below this, the thread pool's wake-up costs more than it saves


class Elementwise(CPUScheduleRule):
    """Parallel + vectorized schedule for functions made only of spatial blocks."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        block = _inline_into_last(sch)
        if block is None:
            return None
        loops = sch.get_loops(block)
        if not loops:
            return sch
        extents = [sch.get(lp).extent for lp in loops]
        if not all(isinstance(e, tirx.IntImm) for e in extents):
            return sch
        _vectorize_and_parallelize(sch, block, loops, extents, target)
        return sch


def _inline_into_last(sch):
    """Inline every block of a function of spatial blocks into the last one and return it; None for
    a function with a reduction, a block that cannot be inlined, or more than one block left."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if not blocks:
        return None
    for b in blocks:
        if any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(b).iter_vars):
            return None
    for b in blocks[:-1]:
        try:
            sch.compute_inline(b)
        except Exception:
            return None
    last = sch.get_child_blocks(sch.get_sblock("root"))
    if len(last) != 1:
        return None
    return last[0]


def _vectorize_and_parallelize(sch, block, loops, extents, target) -> None:
    """Fuse ``block``'s loops, vectorize whole vectors of the innermost dimension and parallelize the
    outer part in chunks when the kernel is large enough for the thread pool to pay."""
    total = 1
    for e in extents:
        total *= int(e)
    bits = sch.get(block).writes[0].source.dtype.bits if sch.get(block).writes else 32
    vw = vector_isa(target).lanes(bits)
    inner_ext = int(extents[-1])
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if inner_ext % vw == 0 and total >= vw:
        outer, inner = sch.split(fused, [None, vw])
        sch.vectorize(inner)
    else:
        outer = fused
    if total >= MIN_PARALLEL_ELEMENTS:
        chunk = max(1, 4096 // vw) if inner_ext % vw == 0 else 4096
        if int(sch.get(outer).extent) > chunk:
            par, _rest = sch.split(outer, [None, chunk])
            sch.parallel(par)
        else:
            sch.parallel(outer)
