"""GPU rule for reductions to a few values: a whole tensor's ``max |x|`` (int8 run-time scales).

dlight's reduction rules parallelise over the output's rows; a reduction whose output is one value
(or a handful) has none, and falls to dlight's ``Fallback``, which runs it in a **single thread**:
on an H200 the ``max |x|`` of MiniLM's 128 x 1536 FFN activation took 80-117 us of a 2.0 ms
integer-only run, six to ten of them per inference (measured with ``benchmarks/cuda_encoder.py``).
This rule gives each output value one block of threads (1024 on CUDA, 256 on OpenCL, whose
devices often cap a work-group there): each thread reduces a
strided slice (consecutive threads read consecutive elements, so the loads coalesce), then the
block combines the threads' partial results (TVM's cross-thread reduction: warp shuffles and
shared memory). Same reduction, other order: exact for max/min and integer sums; a float sum may
round differently from a serial one.
"""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import try_inline_contiguous_spatial
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule

THREADS = {"cuda": 1024, "opencl": 256}
MAX_OUTPUTS = 64  # outputs (blocks) up to which a reduction counts as "to a few values"
MIN_REDUCED = 2048  # elements per output below which one block gains little over the fallback


class WholeReduction(GPUScheduleRule):
    """One block of threads (:data:`THREADS` per target kind) per output value of a reduction with
    few outputs."""

    def apply(self, func, target, _tunable):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = try_inline_contiguous_spatial(sch, normalize_prim_func(sch))
        if infos is None or len(infos) != 1 or not infos[0].is_reduction():
            return None
        info = infos[0]
        extents = [i.dom for i in info.iters]
        if not all(isinstance(e, (int, tirx.IntImm)) for e in extents):
            return None  # a symbolic extent
        kinds = info.dom_kind()
        spatial = math.prod(int(e) for e, k in zip(extents, kinds) if k == "S")
        reduced = math.prod(int(e) for e, k in zip(extents, kinds) if k == "R")
        if spatial > MAX_OUTPUTS or reduced < MIN_REDUCED or set(kinds) - {"S", "R"}:
            return None
        block = info.block_rv
        loops = sch.get_loops(block)
        s_loops = [lp for lp, k in zip(loops, kinds) if k == "S"]
        r_loops = [lp for lp, k in zip(loops, kinds) if k == "R"]
        sch.reorder(*s_loops, *r_loops)
        if not s_loops:
            s_loops = [sch.add_unit_loop(r_loops[0])]
        sch.fuse(*s_loops)
        _, tx = sch.split(sch.fuse(*r_loops), factors=[None, THREADS.get(target.kind.name, 256)])
        partial = sch.rfactor(tx, 0)  # each thread's running result over its strided slice
        bx, r, tx = sch.get_loops(partial)
        sch.reorder(bx, tx, r)
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        sch.set_scope(partial, 0, "local")
        sch.decompose_reduction(partial, r)
        sch.reverse_compute_at(block, bx, preserve_unit_loops=True)  # the block combines them
        _, tx, *rest = sch.get_loops(block)
        if rest:  # the reduction loop must be the innermost for the cross-thread combination
            sch.reorder(sch.fuse(*rest), tx)
        sch.bind(tx, "threadIdx.x")
        return sch
