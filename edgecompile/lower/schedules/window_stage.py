"""The padded stage of a window op's kernel (:func:`~edgecompile.passes.padding.padded_stage`),
scheduled one channel at a time inside the op's own channel loop.

A stride-1 depthwise convolution or pool reads its input padded. As a kernel of its own, the
padded copy went through memory (192x64x64: 0.26 ms before a 0.42 ms depthwise + SiLU); inlined
into the taps, every tap carried the bounds checks, which TVM's vectorizer turns into scalar code
(3x slower taps). Here the stage is computed at the output's channel loop: the taps' loops are
reordered so that channel (and batch) come outermost, the stage fills one padded channel (a
buffer of ``(H + pt + pb) * (W + pl + pr)`` floats, in cache) and the taps read it. The stage's
column loop is partitioned at the padding, so its interior copies whole vectors with no column
check (the row check is one branch per row). 192x64x64 depthwise + SiLU: 0.26 + 0.42 -> 0.48 ms.
Decision: a whole channel, not a strip of the rows one output row needs: stored and then at once
read back at unaligned offsets, a 3-row strip stalled every tap on store forwarding (0.94 ms)."""

from __future__ import annotations

from tvm import s_tir, sym, tirx

from edgecompile.lower.schedules.loops import uses, vectorize_ragged
from edgecompile.passes.padding import STAGE_ATTR


def stage_blocks(sch: s_tir.Schedule) -> list:
    """The function's padded stages: root blocks annotated with ``STAGE_ATTR``."""
    return [b for b in sch.get_child_blocks(sch.get_sblock("root")) if STAGE_ATTR in sch.get(b).annotations]


def schedule_staged(sch: s_tir.Schedule, block, stage, lanes: int, vw: int, parallel: bool) -> bool:
    """Compute ``stage`` per channel inside ``block``'s loops (scheduled here: channel loop
    outermost and parallel when ``parallel``, innermost loop vectorized by ``lanes``, the stage's
    interior by the target's ``vw``); False,
    with nothing changed, when the block does not read the stage one channel per iteration of
    its loops (then the caller schedules it as usual and :func:`schedule_alone` the stage)."""
    loops = sch.get_loops(block)
    outer = _batch_channel_loops(sch, block, stage, loops)
    if outer is None:
        return False
    rest = [lp for lp in loops if not any(sch.get(lp).same_as(sch.get(o)) for o in outer)]
    sch.reorder(*outer, *rest)
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    if lanes > 1 and rest:
        vectorize_ragged(sch, block, lanes)
    if parallel:
        sch.parallel(fused)
    sch.compute_at(stage, fused)
    _vectorize_interior(sch, stage, vw)
    return True


def schedule_alone(sch: s_tir.Schedule, stage, lanes: int) -> None:
    """The stage as a loop nest of its own (a padded copy in the function): rows parallel, the
    interior of each row in vectors."""
    loops = sch.get_loops(stage)
    if len(loops) > 1:
        sch.parallel(sch.fuse(*loops[:-1]))
    _vectorize_interior(sch, stage, lanes)


def _vectorize_interior(sch: s_tir.Schedule, stage, lanes: int) -> None:
    """Partition the stage's column loop at its left and right padding and vectorize the
    interior: with the column range known, the column check simplifies away and the interior
    copies unit-stride vectors. The interior goes in pieces LLVM splits into whole registers: its
    multiple of ``lanes``, then the rest by powers of two (a 28-lane vector was put together by
    element inserts)."""
    _, pl, _, pr = (int(v) for v in sch.get(stage).annotations[STAGE_ATTR])
    col = sch.get_loops(stage)[-1]
    width = int(sch.get(col).extent) - pl - pr
    pieces = [width - width % lanes] if width >= lanes else []
    rest = width % lanes if width >= lanes else width
    pieces += [1 << b for b in reversed(range(rest.bit_length())) if rest >> b & 1]
    factors = ([pl] if pl else []) + pieces
    if pr:
        factors.append(None)
    elif len(factors) > 1:
        factors[-1] = None
    parts = sch.loop_partition(col, factors) if len(factors) > 1 else [col]
    for part in parts[1 if pl else 0 : len(parts) - (1 if pr else 0)]:
        if int(sch.get(part).extent) > 1:
            sch.vectorize(part)


def _batch_channel_loops(sch: s_tir.Schedule, block, stage, loops) -> list | None:
    """The loops of ``block`` that pick the stage's batch and channel (each read index a bare loop
    variable or a constant, and the row and column indices independent of them), outermost first;
    None when the reads are not of that form."""
    if not loops:
        return None
    buf = sch.get(stage).writes[0].source
    realize = sch.get(loops[-1]).body
    if not isinstance(realize, s_tir.SBlockRealize):
        return None
    block_vars = realize.block.iter_vars
    analyzer = sym.Analyzer()
    for iv in block_vars:
        analyzer.bind(iv.var, iv.dom)
    regions = [r for r in sch.get(block).reads if r.source.same_as(buf)]
    if len(regions) != 1:
        return None
    idx = [analyzer.simplify(r.min) for r in regions[0].region]
    loop_vars = [sch.get(lp).loop_var for lp in loops]
    outer, picked = [], []
    for e in idx[:2]:
        if isinstance(e, tirx.IntImm):
            continue
        k = next((i for i, iv in enumerate(block_vars) if iv.var.same_as(e)), None)
        value = realize.iter_values[k] if k is not None else None
        if value is None or not any(value.same_as(v) for v in loop_vars):
            return None  # not a bare block variable bound to a bare loop variable
        outer.append(loops[next(i for i, v in enumerate(loop_vars) if v.same_as(value))])
        picked.append(e)
    if not outer or any(uses(e, v) for e in idx[2:] for v in picked):
        return None
    return outer
