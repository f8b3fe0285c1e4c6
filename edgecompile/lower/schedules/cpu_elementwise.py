"""CPU schedule for injective kernels (elementwise chains, broadcasts, transposes, reshapes):
inline the chain into its last block, then parallelize the outer part of the fused loop nest and
vectorize the innermost dimension."""

from __future__ import annotations

import tvm
from tvm import s_tir, sym, tirx
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

from edgecompile.lower.schedules.isa import vector_isa
from edgecompile.lower.schedules.window_stage import schedule_alone, schedule_staged, stage_blocks
from edgecompile.lower.tir_walk import subexpressions

MIN_PARALLEL_ELEMENTS = 16384  # below this, the thread pool's wake-up costs more than it saves
# rows at least this many vectors long that no wide lane count divides run in full vectors with a
# guarded last one: MobileViT's 130-wide padded rows took 2 lanes (64x130x130 copy: 1.4 -> 0.2 ms)
RAGGED_MIN_VECTORS = 2
# loads that vary along the row only (taps' weights), from which a row's vector chunks go outermost:
# channels-last 5x5 depthwise over 672x14x14 took 0.25 ms pixels-outer, 0.13 ms chunks-outer
MIN_TAPS_CHUNKS_OUTER = 4


class Elementwise(CPUScheduleRule):
    """Parallel + vectorized schedule for functions made only of spatial blocks."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        if stage_blocks(sch):
            try:  # a window op's padded stage, per channel in the op's loops (window_stage)
                return _schedule(s_tir.Schedule(func), target, staged=True)
            except Exception:  # noqa: BLE001 - a primitive refused this form: the stage apart below
                pass
        return _schedule(sch, target, staged=False)


def _schedule(sch: s_tir.Schedule, target: Target, staged: bool) -> s_tir.Schedule | None:
    stages = stage_blocks(sch)
    outputs = _inline_into_outputs(sch, keep=stages)
    if outputs is None:
        return None
    if staged:  # the inlined reshapes' indices simplified (``(i // 784 + c) % 32`` -> ``c``): else
        # the stage's buffer is not compacted to the one channel each iteration writes
        sch = s_tir.Schedule(s_tir.transform.StmtSimplify()(sch.mod)["main"])
        stages = stage_blocks(sch)
        outputs = sch.get_child_blocks(sch.get_sblock("root"))
    outputs = [b for b in outputs if not any(sch.get(b).same_as(sch.get(s)) for s in stages)]
    placed, vw = [], vector_isa(target).lanes(32)
    for block in outputs:
        rows = _row_loops(sch, block)
        if rows is None:
            continue
        stage = _stage_read_by(sch, block, stages)
        if staged and stage is not None and stage not in placed:
            total = _product(rows[1])
            lanes = _lanes(int(rows[1][-1]), vw) or 1
            if not schedule_staged(sch, block, stage, lanes, vw, total >= MIN_PARALLEL_ELEMENTS):
                raise ValueError("the taps do not read their padded stage one channel at a time")
            placed.append(stage)
            continue
        _vectorize_and_parallelize(sch, block, *rows, target)
    for stage in stages:
        if stage not in placed:
            schedule_alone(sch, stage, vw)
    return sch


def _stage_read_by(sch: s_tir.Schedule, block, stages: list):
    """The padded stage ``block`` reads, if any."""
    bufs = [r.source for r in sch.get(block).reads]
    return next((s for s in stages if any(b.same_as(sch.get(s).writes[0].source) for b in bufs)), None)


def _product(extents) -> int:
    total = 1
    for e in extents:
        total *= int(e)
    return total


def _row_loops(sch: s_tir.Schedule, block):
    """The block's loops and their extents, the flattened innermost one split into the image's
    rows where it wraps (:func:`_wrapped_row`); None for no loops or a symbolic extent."""
    loops = sch.get_loops(block)
    if not loops:
        return None
    extents = [sch.get(lp).extent for lp in loops]
    if not all(isinstance(e, tirx.IntImm) for e in extents):
        return None
    row = _wrapped_row(sch.get(block), int(extents[-1]))
    if row is not None:  # the image's rows, not the flattened index, vectorized
        loops = [*loops[:-1], *sch.split(loops[-1], [None, row])]
        extents = [*extents[:-1], tirx.IntImm("int64", int(extents[-1]) // row), tirx.IntImm("int64", row)]
    return loops, extents


def _inline_into_outputs(sch, keep: list = ()):
    """Inline every block of a function of spatial blocks into the blocks that write its outputs
    and return those (several for a split: ViT's fused QKV reshape-transpose-split, 12 x 0.17 ms on
    the generic fallback); None for a function with a reduction or a block that cannot be inlined."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if not blocks:
        return None
    for b in blocks:
        if any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(b).iter_vars):
            return None
    for b in blocks[:-1]:
        if not sch.get_consumers(b) or any(sch.get(b).same_as(sch.get(k)) for k in keep):
            continue  # an output of the function (scheduled as one) or a padded stage kept apart
        try:
            sch.compute_inline(b)
        except Exception:
            return None
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _wrapped_row(block: s_tir.SBlock, inner_extent: int) -> int | None:
    """The row length at which the innermost index wraps, when the block reads it flattened
    (``i // W``, ``i % W``: a reshape that merged an image's rows, fused after a depthwise
    convolution's taps), so that the loop splits into rows and the reads become affine; None when
    the innermost index is read as it is. Vectorized flattened, LLVM put each tap's vector together
    from scalar loads (EfficientNet-Lite0's 5x5 depthwise over 240x28x28: 1.8 ms; by rows 0.2 ms)."""
    if len(block.iter_vars) == 0:
        return None
    var = block.iter_vars[-1].var
    analyzer = sym.Analyzer()
    for iv in block.iter_vars:
        analyzer.bind(iv.var, iv.dom)
    found = [
        int(node.b.value)
        for region in block.reads
        for rng in region.region
        for node in subexpressions(analyzer.simplify(rng.min))
        if isinstance(node, (tirx.FloorMod, tirx.FloorDiv)) and isinstance(node.b, tirx.IntImm)
        and any(v.same_as(var) for v in subexpressions(node.a))
    ]
    rows = [k for k in found if 1 < k < inner_extent and inner_extent % k == 0]
    return min(rows) if rows else None


def _vectorize_and_parallelize(sch, block, loops, extents, target) -> None:
    """Vectorize the innermost dimension by the widest lane count that divides it (a 28-wide image
    row takes 4 lanes rather than none) or, for a row of at least two vectors that no half vector
    divides, by whole vectors and a guarded partial one (a 56-wide row takes 8 lanes: the guarded
    vector's loads became gathers, 0.5 ms against 0.36 ms for a 3x3 depthwise over 144x56x56),
    fuse the outer loops (their index arithmetic then costs once per row, not per element) and
    parallelize them in chunks when the kernel is large enough for the thread pool to pay. A kernel
    whose rows are one whole vector keeps every loop fused; rows of several keep the row loop apart,
    so that indices computed from the outer coordinates (a resize's source row) stay the same
    across a vector's lanes (fused, each lane's was a gather). Where the row holds the taps' weights
    (:func:`_row_invariant_taps`), its vector chunks go outside the other loops."""
    total = _product(extents)
    bits = sch.get(block).writes[0].source.dtype.bits if sch.get(block).writes else 32
    vw = vector_isa(target).lanes(bits)
    inner_ext = int(extents[-1])
    lanes = _lanes(inner_ext, vw)
    if (lanes == vw and inner_ext % vw == 0 and inner_ext < RAGGED_MIN_VECTORS * vw) or len(loops) == 1:
        fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        outer = fused
        if lanes and total >= lanes:
            outer, inner = sch.split(fused, [None, lanes])
            sch.vectorize(inner)
        per_outer = lanes or 1
    else:
        outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        per_outer = inner_ext
        if lanes:
            vectors, inner = sch.split(loops[-1], [None, lanes])
            sch.vectorize(inner)
            if _row_invariant_taps(sch.get(block)) >= MIN_TAPS_CHUNKS_OUTER:
                sch.reorder(vectors, outer)  # each chunk's tap weights stay in L1 across the pixels
                outer, per_outer = vectors, total // int(sch.get(vectors).extent)
    if total >= MIN_PARALLEL_ELEMENTS:
        chunk = max(1, 4096 // per_outer)
        if int(sch.get(outer).extent) > chunk:
            par, _rest = sch.split(outer, [None, chunk])
            sch.parallel(par)
        else:
            sch.parallel(outer)


def _lanes(inner_ext: int, vw: int) -> int | None:
    """Lanes for a row of ``inner_ext``: the widest of ``vw`` and its halvings that divides it, or
    ``vw`` (whole vectors and a guarded partial one: a padded 130-wide row, not 2 lanes) where only
    a narrow one does and the row is at least ``RAGGED_MIN_VECTORS`` vectors long."""
    lanes = next((v for v in _halvings(vw) if inner_ext % v == 0), None)
    if (lanes or 1) < vw // 2 and inner_ext >= RAGGED_MIN_VECTORS * vw:
        lanes = vw
    return lanes


def _row_invariant_taps(block: s_tir.SBlock) -> int:
    """How many loads in the block's value vary along its innermost dimension only (a channels-last
    depthwise convolution's weights, one vector per tap, the same for every pixel)."""
    value = getattr(block.body, "value", None)
    if value is None or not block.iter_vars:
        return 0
    inner = block.iter_vars[-1].var
    others = [iv.var for iv in block.iter_vars[:-1]]
    count = 0
    for node in subexpressions(value):
        if isinstance(node, tvm.ir.expr.TensorLoad):
            used = [v for i in node.indices for v in subexpressions(i) if isinstance(v, tirx.Var)]
            if any(v.same_as(inner) for v in used) and not any(v.same_as(o) for v in used for o in others):
                count += 1
    return count


def _halvings(vw: int) -> list[int]:
    """``vw, vw/2, ..., 2``: the lane counts tried, widest first."""
    out = []
    while vw >= 2:
        out.append(vw)
        vw //= 2
    return out
