"""CPU schedule for the dot-product GEMMs over packed weights, with fused epilogues: int8 x int8 ->
int32, and the bf16 recipe's bf16 x bf16 -> fp32 (``vdpbf16ps``, same blocking, its own intrinsic).

Takes the GEMMs :mod:`edgecompile.lower.pack_weights` emits for a target with an int8 dot-product
instruction (their reduction block carries the tensor intrinsic's name), and the activation GEMMs
of :mod:`edgecompile.lower.activation_gemm`, whose right operand is packed by a stage of their own
(run in parallel over its panels, before the GEMM). Same register blocking
as the fp32 rule — ``MR x NR`` int32 accumulators per tile, N tiles outer and parallel — with the
innermost ``LANES x KR`` step tensorized to one ``vpdpbusd`` / ``vpmaddwd`` / ``sdot``. The
A-conversion stage runs once before the GEMM (parallel over rows); the output stage and every
epilogue fused after it (bias, requantize, residual add) run on the tile while it is in registers.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

from edgecompile.lower.schedules.bf16_pairs import PACK_INTRIN, PAIR_GROUP, bf16_pair_kernel
from edgecompile.lower.schedules.cpu_matmul import inline_epilogue, inline_side_inputs
from edgecompile.lower.schedules.int8_dot import (
    A_PREP,
    B_PACK,
    INT8_GEMM_ATTR,
    INT8_MR_ATTR,
    bf16_kernel,
    int8_kernel,
    int16_kernel,
)
from edgecompile.lower.schedules.isa import vector_isa
from edgecompile.lower.schedules.loops import vectorize_innermost


def _int8_gemm_block(sch: s_tir.Schedule):
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if INT8_GEMM_ATTR in sch.get(block).annotations:
            return block
    return None


class Int8Matmul(CPUScheduleRule):
    """Register-blocked, tensorized int8 GEMM for LLVM CPU targets."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        main = _int8_gemm_block(sch)
        if main is None:
            return None
        ann = sch.get(main).annotations
        isa = vector_isa(target)
        kernel = next(
            (
                k
                for k in (int8_kernel(isa), int16_kernel(isa), bf16_kernel(isa), bf16_pair_kernel(isa))
                if k and k.intrin == str(ann[INT8_GEMM_ATTR])
            ),
            None,
        )
        if kernel is None:
            return None  # packed for another ISA: leave it to the generic rules
        mr = int(ann[INT8_MR_ATTR])
        epilogue = inline_epilogue(sch, main)
        if epilogue in ("fail", None):
            return None
        if not inline_side_inputs(sch, epilogue, main):
            return None
        stages = {sch.get(b).name_hint: b for b in sch.get_producers(main)}
        prep, pack = stages.pop(A_PREP, None), stages.pop(B_PACK, None)
        if prep is None or stages:
            return None
        for stage in (prep, pack) if pack is not None else (prep,):
            for block in sch.get_producers(stage):  # e.g. a fused quantize: computed inside the pass
                sch.compute_inline(block)

        loops = sch.get_loops(main)
        *spatial, ko = loops if kernel.bf16_pairs else loops[:-1]
        *batch, i, j = spatial
        if batch:
            s = sch.fuse(*batch) if len(batch) > 1 else batch[0]
        else:
            s, i = sch.split(i, [1, None])
        nr = int(sch.get(main).reads[-1].source.shape[-2])
        i0, i1 = sch.split(i, [None, mr])
        j0, j1 = sch.split(j, [None, nr])
        jv, jl = sch.split(j1, [None, kernel.lanes])
        sch.reorder(s, j0, i0, ko, i1, jv, jl)
        par = sch.fuse(s, j0)
        sch.parallel(par)
        sch.set_scope(main, 0, "local")
        sch.reverse_compute_at(epilogue, i0, preserve_unit_loops=True)
        sch.unroll(i1)
        sch.unroll(jv)
        init = sch.decompose_reduction(main, ko)
        vectorize_innermost(sch, init, kernel.lanes)
        sch.tensorize(jl, kernel.intrin)
        vectorize_innermost(sch, epilogue, kernel.lanes)

        _operand_stages(sch, kernel, prep, pack)
        return sch


def _operand_stages(sch: s_tir.Schedule, kernel, prep, pack) -> None:
    """A's conversion: rows in parallel, vectorized; a run-time packed B (activation_gemm): its
    panels in parallel."""
    *rows, k = sch.get_loops(prep)
    sch.parallel(sch.fuse(*rows) if len(rows) > 1 else rows[0])
    if kernel.bf16_pairs:  # 16 words from 32 floats per conversion
        sch.tensorize(sch.split(k, [None, PAIR_GROUP // 2])[1], PACK_INTRIN)
    else:
        vectorize_innermost(sch, prep, 32 if kernel.a_dtype == "int16" else 64)
    if pack is not None:
        *panels, _ko, _ji, ki = sch.get_loops(pack)
        sch.parallel(sch.fuse(*panels) if len(panels) > 1 else panels[0])
        sch.unroll(ki)
