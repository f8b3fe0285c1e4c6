"""CPU schedule for row-wise reductions with their fused elementwise stages: softmax, LayerNorm,
and what fusion puts around them (dequantize before, quantize after).

dlight's CPU ``Reduction`` rule keeps every stage as its own pass over the row and reduces with
one scalar accumulator, so each row's max and sum are a chain of dependent adds (latency-bound:
about 4 cycles per element). Here: every injective stage that can be is inlined into its
consumer, except one too costly to compute twice (softmax's exp: :func:`_kept_stage`); the rows
(all loops but the last) run in parallel, every remaining stage computed per row; each reduction
is split into ``LANES`` independent partial accumulators (``rfactor``) that are vectorized and
then combined; elementwise stages are vectorized. Softmax over MiniLM's
12x128x128 scores: 0.50 ms -> 0.22 ms on one Zen 3 core.

Ragged rows (a ViT's 197 or 257 keys, EfficientFormer's 49) are split into whole vectors plus a
partial one, each block guarded by its split's predicate. TVM 0.27's ``compute_at`` drops that
predicate from the ``rfactor`` blocks it moves under the row loop (they then read past the row and
sum 11 stray elements: a softmax off by up to 0.4), so the finished function is rebuilt with each
partial-accumulator block's guard put back (:func:`_guarded`); every guard is marked ``likely``, which
:data:`TIR_CONFIG`'s loop partitioning needs to peel the last vector off as a scalar tail, leaving
the whole vectors unconditional and vectorized. Softmax over 12x197x197 scores on one Zen 5 core:
0.42 ms with the guards inside the vector loop, 0.24 ms partitioned (208 wide, whole vectors: 0.24 ms;
dlight's Reduction before: 4 ms). Correctness never depends on the partitioning, only speed.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx

from edgecompile.lower.schedules.isa import vector_isa
from edgecompile.lower.schedules.loops import GuardedRule, extent, uses, vectorize_ragged
from edgecompile.lower.tir_walk import replace_realizes, subexpressions

# a stage read twice whose expression has this many nodes is computed once per row (TVM's fast exp: ~100)
SHARED_STAGE_MIN_NODES = 24
STACK_ALLOC_BYTES = 1024  # TVM's kMaxStackAlloca: smaller CPU buffers are allocas, larger ones workspace calls
# TIR lowering options CPU builds run with: peel ``likely``-guarded tails off constant loops
TIR_CONFIG = {"s_tir.LoopPartition": {"partition_const_loop": True}}


def _is_reduction(sch, block) -> bool:
    return any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)


class RowReduction(GuardedRule):
    """Parallel rows, inlined stages, vectorized partial reductions."""

    def _schedule(self, func, target):
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        if not blocks:
            return None
        reductions = [b for b in blocks if _is_reduction(sch, b)]
        if not reductions or not _one_inner_reduction_axis(sch, reductions):
            return None
        vw = vector_isa(target).lanes(32)
        widths = _row_widths(sch, reductions, vw)
        if widths is None:
            return None
        out = blocks[-1]
        # a bare row reduction (a dynamic int8 scale's max |x|): its lane-combining step is the output
        bare = _is_reduction(sch, out)
        if bare and (len(reductions) != 1 or any(w % vw for w in widths.values())):
            return None
        kept, aliased = _kept_stage(sch, blocks, out)
        for b in blocks[:-1]:
            if not _is_reduction(sch, b) and not (kept is not None and sch.get(b).same_as(sch.get(kept))):
                try:
                    sch.compute_inline(b)
                except Exception:
                    pass
        kept_buffer = sch.get(kept).writes[0].source if aliased else None
        # Partial accumulators per lane, before the stages are moved under the row loop.
        partials = _lane_partials(sch, reductions, vw)
        loops = sch.get_loops(out)
        if len(loops) < 2:
            return None
        row = sch.fuse(*loops[:-1])
        sch.parallel(row)
        if not bare:
            vectorize_ragged(sch, out, vw)
        _stages_per_row(sch, out, row, partials, vw)
        return _mended(sch, out, partials, widths, vw, kept_buffer)


def _mended(sch, out, partials: dict, widths: dict, vw: int, kept_buffer):
    """The finished schedule, its function rebuilt where it must be: ragged rows' partial
    accumulators guarded again (:func:`_guarded`), a kept stage's buffer matched onto the output
    (:func:`_aliased`); None where a ragged reduction kept one accumulator (compute_at dropped its
    guard)."""
    lanes = {}
    if any(w % vw for w in widths.values()):
        if len(partials) != len(widths):
            return None
        lanes = {sch.get(rf).name_hint: widths[name] for name, rf in partials.items()}
    if not lanes and kept_buffer is None:
        return sch
    output = sch.get(out).writes[0].source

    def mend(realize):
        if kept_buffer is not None and realize.block.name_hint == "root":
            return _aliased(realize, kept_buffer, output)
        return _guarded(realize, lanes, vw)

    return s_tir.Schedule(replace_realizes(sch.mod["main"], mend))


def _kept_stage(sch, blocks, out):
    """``(stage, aliased)``: the stage read by two others that is too costly to compute twice
    (softmax's exp, read by the sum and by the normalization; TVM's fast softmax inlines it into
    both), kept as its own vectorized pass over the row, or ``(None, False)``. Where the output block
    reads it at the element it writes and has its type, its values are written where the output's
    go (``aliased``, :func:`_aliased`), as ONNX Runtime's softmax does, and the normalization divides
    them in place: no row buffer. Otherwise (a softmax requantized to int8) it is kept only where
    its row buffer is a stack allocation (under ``STACK_ALLOC_BYTES``): from the workspace pool, once
    per row, it cost what the second exp saved. Softmax, Zen 4, 1 thread: 16x256x256 590 -> 440-510
    us, 6x257x257 231 -> 178 us, 12x128x128 123 -> 88 us, 6x197x197 142 -> 112 us."""
    output = sch.get(out).writes[0]
    for b in blocks[:-1]:
        block = sch.get(b)
        if _is_reduction(sch, b) or len(sch.get_consumers(b)) < 2 or len(block.writes) != 1:
            continue
        value = getattr(block.body, "value", None)
        if value is None or sum(1 for _ in subexpressions(value)) < SHARED_STAGE_MIN_NODES:
            continue
        written = block.writes[0].source
        if written.dtype == output.source.dtype and _same_static_shape(written, output.source):
            if _reads_where_it_writes(sch, out, written):
                return b, True
        row = written.shape[-1]
        if isinstance(row, tirx.IntImm) and int(row) * written.dtype.bits // 8 < STACK_ALLOC_BYTES:
            return b, False
        return None, False
    return None, False


def _same_static_shape(a, b) -> bool:
    dims = [*a.shape, *b.shape]
    return (
        len(a.shape) == len(b.shape)
        and all(isinstance(d, tirx.IntImm) for d in dims)
        and all(int(x) == int(y) for x, y in zip(a.shape, b.shape))
    )


def _reads_where_it_writes(sch, out, buffer) -> bool:
    """The output block reads ``buffer`` only at the element it writes (so writing both in one
    buffer is safe: each element is read before it is overwritten, by the same iteration)."""
    block = sch.get(out)
    written = block.writes[0].region
    reads = [r for r in block.reads if r.source.same_as(buffer)]
    return bool(reads) and all(
        len(r.region) == len(written)
        and all(a.min.same_as(b.min) and int(a.extent) == 1 == int(b.extent) for a, b in zip(r.region, written))
        for r in reads
    )


def _aliased(root, kept, output):
    """The root block with the kept stage's buffer no longer allocated but matched onto the whole
    output buffer: its values are written where the output's go."""
    block = root.block
    whole = tirx.BufferRegion(output, [tvm.ir.Range.from_min_extent(0, d) for d in output.shape])
    body = s_tir.SBlock(
        block.iter_vars, block.reads, block.writes, block.name_hint, block.body, block.init,
        [b for b in block.alloc_buffers if not b.same_as(kept)],
        [*block.match_buffers, s_tir.MatchBufferRegion(kept, whole)], block.annotations,
    )  # fmt: skip
    return s_tir.SBlockRealize(root.iter_values, root.predicate, body)


def _one_inner_reduction_axis(sch, reductions) -> bool:
    """Every reduction block has exactly one reduction axis, the innermost (and a row axis), and
    reads one buffer along it (a row's values, not a dot product of two operands: a GEMM whose
    shape the matmul rule declined is not a row reduction)."""
    for b in reductions:
        block = sch.get(b)
        ivs = block.iter_vars
        if sum(iv.iter_type == tirx.IterVar.CommReduce for iv in ivs) != 1:
            return False
        if ivs[-1].iter_type != tirx.IterVar.CommReduce or len(ivs) < 2:
            return False
        k = ivs[-1].var
        reads = [r for r in block.reads if any(uses(rg.min, k) for rg in r.region)]
        reads = [r for r in reads if not r.source.same_as(block.writes[0].source)]
        if len({r.source.name for r in reads}) > 1:
            return False
        # along the row's contiguous last index: a reduction over an outer axis (max over the
        # queries of [H, S, S] probabilities) is ColumnReduction's (here: 512 us vs ~40 us)
        if any(not uses(r.region[-1].min, k) for r in reads):
            return False
    return True


def _row_widths(sch, reductions, vw: int) -> dict | None:
    """{reduction block name: its row width}, rows of at least two vectors (shorter or symbolic
    rows are left to dlight); None when a row is shorter."""
    widths = {}
    for b in reductions:
        ext = extent(sch, sch.get_loops(b)[-1])
        if ext is None or ext < 2 * vw:
            return None
        widths[sch.get(b).name_hint] = ext
    return widths


def _guarded(realize, widths: dict, vw: int):
    """The realize of a partial-accumulator block over a ragged row (``widths``: rf block name ->
    row width) with its guard ``lane + vw * k_outer < width`` restored, and every other guard of
    a split marked ``likely``; None for a block without a guard."""
    block = realize.block
    width = widths.get(block.name_hint)
    if width is None:
        if isinstance(realize.predicate, tirx.IntImm) or _is_likely(realize.predicate):
            return None
        return s_tir.SBlockRealize(realize.iter_values, tirx.likely(realize.predicate), block)
    ivs, values = block.iter_vars, realize.iter_values
    lane, k_outer = ivs[0], ivs[-1]
    if not (
        lane.iter_type == tirx.IterVar.DataPar and int(lane.dom.extent) == vw
        and k_outer.iter_type == tirx.IterVar.CommReduce and int(k_outer.dom.extent) == -(-width // vw)
    ):  # fmt: skip
        raise ValueError(f"unexpected partial-accumulator block {block.name_hint}")
    return s_tir.SBlockRealize(values, tirx.likely(values[-1] * vw + values[0] < width), block)


def _is_likely(expr) -> bool:
    return getattr(getattr(expr, "op", None), "name", "").endswith(".likely")


def _lane_partials(sch, reductions, vw: int) -> dict:
    """Split each reduction into ``vw`` partial accumulators (``rfactor``): {block name: rfactor block}."""
    partials = {}
    for b in reductions:
        k = sch.get_loops(b)[-1]
        _, ki = sch.split(k, [None, vw])
        try:
            partials[sch.get(b).name_hint] = sch.rfactor(ki, 0)
        except Exception:
            pass  # e.g. a tuple reduction rfactor does not take: stays one accumulator
    return partials


def _stages_per_row(sch, out, row, partials: dict, vw: int) -> None:
    """Compute every other stage under the row loop; vectorize the lanes of the partial
    accumulators and the elementwise stages."""
    remaining = [b for b in sch.get_child_blocks(sch.get_sblock("root")) if not sch.get(b).same_as(sch.get(out))]
    for b in reversed(remaining):
        sch.compute_at(b, row, preserve_unit_loops=False)
    for rf in partials.values():
        ls = sch.get_loops(rf)
        sch.reorder(ls[-1], ls[-2])  # lanes innermost: (row, k_outer, lane)
        sch.vectorize(sch.get_loops(rf)[-1])
    for b in sch.get_child_blocks(row):
        if not _is_reduction(sch, b) and not sch.get(b).same_as(sch.get(out)):
            vectorize_ragged(sch, b, vw)
