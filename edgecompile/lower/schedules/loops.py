"""Loop helpers shared by our CPU schedule rules."""

from __future__ import annotations

from tvm import s_tir, tirx


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
