"""CPU schedule for dense / matmul / batch-matmul kernels with fused elementwise epilogues.

The kernel is a register-blocked GEMM: for every ``MR x NR`` tile of the output, the whole
reduction runs with the tile's accumulators in vector registers (``NR`` is a multiple of the
vector width; ``MR`` rows of A are broadcast), then the epilogue (bias, GELU, residual add,
requantize, ...) is applied to the tile while it is still in registers and written once. Tiles
along N are the outer loop so a column panel of B stays in cache for every row tile; the batch and
N-tile loops run in parallel over the thread pool.

The matmul block is first normalized to ``[S, I, J, K]`` iteration order (dlight's index maps),
without copying buffers. Sizes that do not divide the tile are padded to whole tiles (GEMMs over
packed weights, which TVM does not see as einsums, keep a guarded row tail instead).
"""

from __future__ import annotations

from tvm import IRModule, s_tir, tirx
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.s_tir.dlight.gpu.matmul import get_index_map, get_reduction_blocks
from tvm.target import Target

from edgecompile.lower.schedules.isa import vector_isa
from edgecompile.lower.schedules.loops import extent, vectorize_innermost
from edgecompile.lower.schedules.tiles import gemm_mr, gemm_nr


class Matmul(CPUScheduleRule):
    """Register-blocked GEMM rule for LLVM CPU targets (fp32 and integer accumulation)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        reduction = get_reduction_blocks(sch, blocks)
        if reduction is None:
            return None
        main = reduction[0]
        if not _sums(sch.get(main)):  # a max over a row (a dynamic int8 scale) is no GEMM
            return None
        maps = get_index_map(sch.get(main))
        if maps is None and not _is_canonical(sch.get(main)):
            return None
        # Epilogue: inline every elementwise block after the matmul except the last one.
        epilogue = inline_epilogue(sch, main)
        if epilogue == "fail" or (epilogue is not None and not inline_side_inputs(sch, epilogue, main)):
            return None
        # Anything before the matmul (e.g. a fused transpose) is inlined into its reads.
        if not _inline_producers(sch, main):
            return None
        b_pad = None
        if maps is not None:
            padded = _pad_batched(sch, main, epilogue, target)
            if padded is not None:
                epilogue, b_pad = padded
                maps = get_index_map(sch.get(main))
                if b_pad is not None and _wide_indices(sch.get(main)):
                    return self.apply(_int32_indices(func), target, _)  # see _register_block
        loops = _normalized_loops(sch, main, maps)
        if loops is None:
            return None
        _register_block(sch, main, loops, epilogue, target, b_pad)
        return sch


def _inline_producers(sch, main) -> bool:
    """Inline every producer of ``main``; False if one cannot be."""
    for block in sch.get_producers(main):
        try:
            sch.compute_inline(block)
        except Exception:
            return False
    return True


def _normalized_loops(sch, main, maps):
    """``main``'s loops as ``(s, i, j, k)``: by dlight's index map, or (already ``[S..., I, J, K]``, e.g.
    a GEMM over packed weights) with the batch loops fused; None if the map gives another nest."""
    if maps is not None:
        out_shape = [int(d) if isinstance(d, tirx.IntImm) else None for d in sch.get(main).writes[0].source.shape]
        sch.transform_block_layout(main, maps[0])
        loops = sch.get_loops(main)
        if len(loops) != 4 or extent(sch, loops[2]) != out_shape[-1]:
            # a 2-D A times a batched B: the map folds B's batch into J, whose tiles the write-back
            # cannot follow (it wrote whole rows no tile had computed); A's batch folded into I is fine
            return None
        return tuple(loops)
    *spatial, k = sch.get_loops(main)
    s = sch.fuse(*spatial[:-2]) if len(spatial) > 3 else (spatial[0] if len(spatial) == 3 else None)
    i, j = spatial[-2:]
    if s is None:
        s, i = sch.split(i, [1, None])
    return s, i, j, k


def _register_block(sch, main, loops, epilogue, target, b_pad=None) -> None:
    """Tile ``main`` into ``MR x NR`` register blocks (padded to whole tiles where it can be), the
    N tiles outer and parallel, the epilogue (or a write-back) computed per row tile. ``b_pad``: B's
    padding block where :func:`_pad_batched` padded already."""
    s, i, j, k = loops
    bits = sch.get(main).writes[0].source.dtype.bits
    isa = vector_isa(target)
    vw = isa.lanes(bits)
    m, n = extent(sch, i), extent(sch, j)
    nr, mr = _tile(isa, m, n, bits)
    if (m and m % mr) or (n and n % nr):
        padded = _pad_to_tiles(sch, main, [1, mr if m % mr else 1, nr if n % nr else 1, 1], bool(n % nr), epilogue)
        if padded is not None:
            epilogue, b_pad = padded
            s, i, j, k = sch.get_loops(main)
    i0, i1 = sch.split(i, [None, mr])
    j0, j1 = sch.split(j, [None, nr])
    sch.reorder(s, j0, i0, k, i1, j1)
    split_n = b_pad is not None and (extent(sch, s) or 0) >= MIN_BATCH_SPLIT_N and (extent(sch, j0) or 0) > 1
    if split_n:  # attention's ragged keys: the last column tile apart, so the others store whole vectors
        par = j0
        sch.parallel(s)
        sch.annotate(j0, "pragma_loop_partition_hint", 1)
    else:
        par = sch.fuse(s, j0)
        sch.parallel(par)
    if b_pad is None and _strided_b(sch, main, n, bits):
        b_pad = sch.cache_read(main, len(sch.get(main).reads) - 1, "global")
    if b_pad is not None:
        sch.compute_at(b_pad, par, preserve_unit_loops=True)
        vectorize_innermost(sch, b_pad, vw)

    if epilogue is None:
        wb = sch.cache_write(main, 0, "local")
    else:
        wb = epilogue
        sch.set_scope(main, 0, "local")
    sch.reverse_compute_at(wb, i0, preserve_unit_loops=True)
    # Innermost micro-kernel: unroll the MR rows, vectorize the NR columns (before the
    # reduction is split into init and update: vectorize needs the whole reduction block).
    sch.unroll(i1)
    vectorize_innermost(sch, main, vw)
    init = sch.decompose_reduction(main, k)
    vectorize_innermost(sch, init, vw)
    vectorize_innermost(sch, wb, vw)


# batch x heads from which a GEMM with a padded (ragged) N runs its batch loop parallel and its
# column tiles serial, so that TVM's LoopPartition (hinted) splits off the last, partial tile: the
# write-back of the others then stores whole vectors, not lanes one by one under a per-lane guard.
# DINOv2's Q.K^T over 257 keys (6 heads): 720 -> 566 us (ORT 548). Fewer batch iterations than
# this would leave a thread idle (the column tiles were the parallel work).
MIN_BATCH_SPLIT_N = 4


def _wide_indices(block) -> bool:
    """Whether the block iterates with int64 variables (Relax's shapes)."""
    return any(str(iv.dom.extent.ty) == "int64" for iv in block.iter_vars)


def _int32_indices(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with int32 loop and index variables. The loop-partition hint names its loop's
    variable; TVM's NarrowDataType (which runs before LoopPartition) replaces an int64 loop
    variable by a new int32 one and leaves the hint naming the old one, so the hint is lost."""
    return tirx.transform.ForceNarrowIndexToInt32()(IRModule({"main": func}))["main"]


PANEL_COPY_ROW_BYTES = 4096  # B rows at least a page apart are copied into a panel first


def _strided_b(sch, main, n: int | None, bits: int) -> bool:
    """A row-major B (not packed weights) whose rows are a page or more apart: the micro-kernel's
    loads would touch a new page every ``k``, so each column panel is first copied contiguously."""
    b = sch.get(main).reads[-1].source
    return n is not None and len(b.shape) >= 2 and int(b.shape[-1]) * bits // 8 >= PANEL_COPY_ROW_BYTES


def _tile(isa, m: int | None, n: int | None, bits: int) -> tuple[int, int]:
    """``(NR, MR)``: the register tile's width and height for an ``m x n`` output."""
    nr = gemm_nr(isa, n, bits)
    return nr, gemm_mr(isa, m, nr, bits, allow_tail=True)


def _pad_batched(sch, main, epilogue, target):
    """Pad a GEMM with several batch dims (attention's ``[B, H, M, K] @ [B, H, K, N]``) to whole tiles
    before its batch dims are fused into one: fused, they index by ``//`` and ``%``, TVM no longer
    sees an einsum and :func:`_pad_to_tiles` fails, which left the last vector of every tile guarded
    lane by lane (MobileViT's 30-wide heads: 25 GOP/s). Returns ``(epilogue, b_pad)``, or None where
    no padding is needed or possible."""
    block = sch.get(main)
    ivs = list(block.iter_vars)
    index = [r.min for r in block.writes[0].region]
    if len(ivs) <= 4 or len(index) < 2:
        return None
    at = [next((p for p, iv in enumerate(ivs) if iv.var.same_as(v)), None) for v in index[-2:]]
    if None in at or not all(isinstance(ivs[p].dom.extent, tirx.IntImm) for p in at):
        return None
    m, n = (int(ivs[p].dom.extent) for p in at)
    nr, mr = _tile(vector_isa(target), m, n, block.writes[0].source.dtype.bits)
    if not (m % mr or n % nr):
        return None
    pads = [1] * len(ivs)
    pads[at[0]], pads[at[1]] = (mr if m % mr else 1), (nr if n % nr else 1)
    return _pad_to_tiles(sch, main, pads, bool(n % nr), epilogue)


def _pad_to_tiles(sch, main, pads: list[int], pad_n: bool, epilogue):
    """Pad the iteration space by ``pads`` (per block iterator) to whole tiles (e.g. ViT's 197
    tokens): the padded rows and columns are computed on zeros and never stored, so the
    micro-kernel has no tail. Returns ``(epilogue, b_pad)`` after padding (``b_pad``: B's padding
    block where ``pad_n``, copied per column panel so its loads stay unguarded), or None where TVM
    cannot pad: GEMMs over packed weights are not einsums to TVM (j // NR indexing); they keep a
    guarded row tail, whose condition LLVM hoists out of the k loop."""
    b_pad = None
    try:
        sch.pad_einsum(main, pads)
    except Exception:
        return None
    b_buffer = sch.get(main).reads[-1].source
    for producer in sch.get_producers(main):
        if sch.get(producer).writes[0].source.same_as(b_buffer) and pad_n:
            b_pad = producer  # copied per column panel below, so loads stay unguarded
        else:
            sch.compute_inline(producer)
    unpad = sch.get_consumers(main)[0]
    if epilogue is None:
        epilogue = unpad
    else:
        sch.compute_inline(unpad)
    return epilogue, b_pad


def inline_epilogue(sch, main):
    """Inline the chain after ``main`` into its last block; return that block (or None)."""
    consumers = sch.get_consumers(main)
    if not consumers:
        return None
    chain = []
    frontier = list(consumers)
    while frontier:
        b = frontier.pop(0)
        if any(sch.get(b).same_as(sch.get(c)) for c in chain):
            continue
        chain.append(b)
        frontier.extend(sch.get_consumers(b))
    last = [b for b in chain if not sch.get_consumers(b)]
    if len(last) != 1:
        return "fail"
    for b in chain:
        if sch.get(b).same_as(sch.get(last[0])):
            continue
        try:
            sch.compute_inline(b)
        except Exception:
            return "fail"
    block = last[0]
    if any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(block).iter_vars):
        return "fail"
    return block


def inline_side_inputs(sch, epilogue, main) -> bool:
    """Inline the epilogue's other producers computed in the same function (the other operand of a
    residual add requantized to the sum's scale, an attention mask quantized to the logits' scale)
    into the epilogue; False if one cannot be."""
    changed = True
    while changed:
        changed = False
        for block in sch.get_producers(epilogue):
            if not sch.get(block).same_as(sch.get(main)):
                try:
                    sch.compute_inline(block)
                except Exception:
                    return False
                changed = True
                break
    return True


def _sums(block) -> bool:
    """The reduction starts from zero (a sum of products), not from the lowest value (a max)."""
    init = block.init
    value = getattr(init, "value", None)
    return value is None or (isinstance(value, (tirx.IntImm, tirx.FloatImm)) and float(value.value) == 0.0)


def _is_canonical(block) -> bool:
    """One reduction var last; the output indexed by the spatial vars in order (``C[s..., i, j]``)."""
    ivs = list(block.iter_vars)
    if len(ivs) < 3 or ivs[-1].iter_type != tirx.IterVar.CommReduce:
        return False
    if any(iv.iter_type != tirx.IterVar.DataPar for iv in ivs[:-1]) or len(block.writes) != 1:
        return False
    region = block.writes[0].region
    if len(region) != len(ivs) - 1:
        return False
    return all(r.min.same_as(iv.var) for r, iv in zip(region, ivs[:-1]))
