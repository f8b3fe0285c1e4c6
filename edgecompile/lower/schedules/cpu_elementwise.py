"""CPU schedule for injective kernels (elementwise chains, broadcasts, transposes, reshapes):
inline the chain into its last block, then parallelize the outer part of the fused loop nest and
vectorize the innermost dimension."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

from edgecompile.lower.schedules.isa import vector_isa

MIN_PARALLEL_ELEMENTS = 16384  # below this, the thread pool's wake-up costs more than it saves
# rows at least this many vectors long that no wide lane count divides run in full vectors with a
# guarded last one: MobileViT's 130-wide padded rows took 2 lanes (64x130x130 copy: 1.4 -> 0.2 ms)
RAGGED_MIN_VECTORS = 2


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
    """Vectorize the innermost dimension by the widest lane count that divides it (a 28-wide image
    row takes 4 lanes rather than none) or, for a row of at least two vectors, by whole vectors
    and a guarded partial one, fuse the outer loops (their index arithmetic then costs
    once per row, not per element) and parallelize them in chunks when the kernel is large enough
    for the thread pool to pay. A kernel whose rows are one whole vector keeps every loop fused; rows
    of several keep the row loop apart, so that indices computed from the outer coordinates (a
    resize's source row) stay the same across a vector's lanes (fused, each lane's was a gather)."""
    total = 1
    for e in extents:
        total *= int(e)
    bits = sch.get(block).writes[0].source.dtype.bits if sch.get(block).writes else 32
    vw = vector_isa(target).lanes(bits)
    inner_ext = int(extents[-1])
    lanes = next((v for v in _halvings(vw) if inner_ext % v == 0), None)
    if (lanes or 1) < vw and inner_ext >= RAGGED_MIN_VECTORS * vw:
        lanes = vw  # whole vectors and a guarded partial one (a padded 130-wide row: not 2 lanes)
    if (lanes == vw and inner_ext % vw == 0 and inner_ext < RAGGED_MIN_VECTORS * vw) or len(loops) == 1:
        fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        outer = fused
        if lanes and total >= lanes:
            outer, inner = sch.split(fused, [None, lanes])
            sch.vectorize(inner)
        per_outer = lanes or 1
    else:
        outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        if lanes:
            _, inner = sch.split(loops[-1], [None, lanes])
            sch.vectorize(inner)
        per_outer = inner_ext
    if total >= MIN_PARALLEL_ELEMENTS:
        chunk = max(1, 4096 // per_outer)
        if int(sch.get(outer).extent) > chunk:
            par, _rest = sch.split(outer, [None, chunk])
            sch.parallel(par)
        else:
            sch.parallel(outer)


def _halvings(vw: int) -> list[int]:
    """``vw, vw/2, ..., 2``: the lane counts tried, widest first."""
    out = []
    while vw >= 2:
        out.append(vw)
        vw //= 2
    return out
