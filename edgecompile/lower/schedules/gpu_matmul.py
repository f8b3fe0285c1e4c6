"""GPU matmul rule: dlight's, with int8 tensor-core tiles only where TVM can compile them.

dlight's ``Matmul`` tensorizes int8 x int8 -> int32 GEMMs with WMMA tiles on sm_70+ when every
dimension exceeds 64. TVM 0.27's CUDA code generator rejects those schedules ("Check failed: it
!= fragment_info_.end()"; seen for a plain GEMM and with a fused bias add), so MiniLM's int8
build failed. This rule keeps a tensorized schedule when that kernel compiles on its own (a later
TVM may fix it) and otherwise schedules the same kernel without tensor cores
(``dlight.do_not_tensorize``): every int8 recipe builds, its GEMMs on CUDA cores (int32
multiply-adds) unless :class:`Int8Dp4aMatmul` takes them first.

``Int8Dp4aMatmul`` is our int8 GEMM schedule for CUDA: dlight's normalization to
``C[S, I, J] += A[S, I, K] * B[S, J, K]`` (so both operands are K-contiguous), dlight's tiling
(thread tiles of 4x4 outputs, K staged through shared memory in steps of 16), and the innermost
4 of K tensorized with ``__dp4a`` (four int8 products summed into an int32 in one instruction,
sm_61+; the intrinsic is registered here, :func:`dp4a_intrinsic`), shared rows padded to a multiple
of 4 bytes so the int8x4 loads are aligned. Schedules
preserve semantics and tensorization checks the intrinsic, so the result is exact by
construction; its speed has not been measured (no GPU here).
"""

from __future__ import annotations

import tvm
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.gpu.matmul import (
    auto_inline_consumer_chain,
    auto_inline_producers,
    get_index_map,
    get_reduction_blocks,
)

DP4A = "edgecompile_dp4a_s8s8s32"


def dp4a_intrinsic() -> str:
    """Register (once) and name the tensor intrinsic of one ``__dp4a``: ``C[0] += sum_i A[i] B[i]``
    over 4 int8 from shared memory into a local int32. Ours rather than importing
    ``tvm.s_tir.tensor_intrin``: that package parses ~500 TVMScript intrinsics for every ISA on
    import, 54 s on a 2-core CPU (the CUDA build of a tiny model took 50-400 s for it)."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    if TensorIntrin.get(DP4A, allow_missing=True) is not None:
        return DP4A

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "int8", offset_factor=1, align=4, scope="shared")
        B = T.match_buffer(b, (4,), "int8", offset_factor=1, align=4, scope="shared")
        C = T.match_buffer(c, (1,), "int32", offset_factor=1, align=4, scope="local")
        with T.sblock("root"):
            T.reads(C[0], A[0:4], B[0:4])
            T.writes(C[0])
            for r in range(4):
                with T.sblock("update"):
                    vr = T.axis.remap("R", [r])
                    C[0] = C[0] + T.Cast("int32", A[vr]) * T.Cast("int32", B[vr])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "int8", offset_factor=1, align=4, scope="shared")
        B = T.match_buffer(b, (4,), "int8", offset_factor=1, align=4, scope="shared")
        C = T.match_buffer(c, (1,), "int32", offset_factor=1, align=4, scope="local")
        with T.sblock("root"):
            T.reads(C[0], A[0:4], B[0:4])
            T.writes(C[0])
            C[0] = C[0] + T.call_pure_extern(
                "__dp4a", A.vload([0], "int8x4"), B.vload([0], "int8x4"), T.int32(0), dtype="int32"
            )

    TensorIntrin.register(DP4A, desc, impl)
    return DP4A


class Matmul(dl.gpu.Matmul):
    """dlight's GPU ``Matmul``, falling back from WMMA int8 tiles that do not compile."""

    def apply(self, func, target, tunable):
        sch = super().apply(func, target, tunable)
        # only int8 WMMA tiles are known not to compile (fp16 ones do): probe those alone
        if sch is None or target.kind.name != "cuda" or not _int8_gemm(func) or not _uses_wmma(sch):
            return sch
        try:
            probe = sch.mod["main"].with_attr("global_symbol", "edgecompile_probe")
            tvm.tirx.build(tvm.IRModule({"edgecompile_probe": probe}), target=target)
            return sch
        except Exception:  # noqa: BLE001 - TVM raises InternalError; any failure means "not this way"
            return super().apply(func.with_attr("dlight.do_not_tensorize", True), target, tunable)


def _int8_gemm(func) -> bool:
    """Whether ``func``'s GEMM block reads int8 operands into an int32 accumulator."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    blocks = get_reduction_blocks(sch, sch.get_child_blocks(get_root_block(sch)))
    if not blocks:
        return False
    stmt = sch.get(blocks[0])
    reads = [str(r.source.dtype) for r in stmt.reads]
    return reads[-2:] == ["int8", "int8"] and str(stmt.writes[0].source.dtype) == "int32"


def _uses_wmma(sch) -> bool:
    """Whether the schedule stages tiles in WMMA fragments (TIR has no Python visitor in 0.27)."""
    return "wmma." in sch.mod["main"].script()


class Int8Dp4aMatmul(dl.gpu.Matmul):
    """int8 x int8 -> int32 GEMMs on CUDA with ``__dp4a`` (see the module docstring)."""

    BLOCK_X, BLOCK_Y, MICRO_X, MICRO_Y, STEP_K = 8, 16, 4, 4, 16

    def apply(self, func, target, tunable):
        if not isinstance(func, tvm.tirx.PrimFunc) or target.kind.name != "cuda":
            return None
        from tvm import s_tir

        if not _int8_gemm(func):
            return None
        sch = s_tir.Schedule(func)
        reductions = get_reduction_blocks(sch, sch.get_child_blocks(get_root_block(sch)))
        if len(reductions) != 1:
            return None
        main = reductions[0]
        maps = get_index_map(sch.get(main))
        if maps is None:
            return None
        try:
            return self._schedule(sch, main, maps)
        except Exception:  # noqa: BLE001 - a shape this schedule cannot take: leave it to the next rule
            return None

    def _schedule(self, sch, main, maps):
        matmul_map, a_map, b_map, c_map = maps
        reindex_a = sch.reindex(main, ("read", 0))
        reindex_b = sch.reindex(main, ("read", 1))
        reindex_c = sch.reindex(main, ("write", 0))
        sch.transform_layout(reindex_a, ("write", 0), a_map)
        sch.transform_layout(reindex_b, ("write", 0), b_map)
        sch.transform_layout(reindex_c, ("read", 0), c_map)
        sch.transform_block_layout(main, matmul_map)
        tile_x, tile_y = self.BLOCK_X * self.MICRO_X, self.BLOCK_Y * self.MICRO_Y
        sch.pad_einsum(main, [1, tile_x, tile_y, self.STEP_K])
        batch, x, y, k = sch.get_loops(main)
        by, ty, yi = sch.split(y, [None, self.BLOCK_Y, self.MICRO_Y])
        bx, tx, xi = sch.split(x, [None, self.BLOCK_X, self.MICRO_X])
        ko, ki, k4 = sch.split(k, [None, self.STEP_K // 4, 4])
        sch.reorder(by, bx, ty, tx, ko, ki, xi, yi, k4)
        by = sch.fuse(batch, by)
        sch.bind(bx, "blockIdx.x")
        sch.bind(by, "blockIdx.y")
        sch.bind(ty, "threadIdx.y")
        sch.bind(tx, "threadIdx.x")
        sch.annotate(tx, ann_key="pragma_auto_unroll_max_step", ann_val=256)
        sch.annotate(tx, ann_key="pragma_unroll_explicit", ann_val=1)
        l2g = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(l2g, tx, preserve_unit_loops=True)
        for index in (0, 1):
            g2s = sch.cache_read(main, index, "shared")
            count = len(sch.get_loops(g2s))
            sch.compute_at(g2s, ko, preserve_unit_loops=True)
            loops = sch.get_loops(g2s)[-count:]
            fty, ftx, _, vec = sch.split(sch.fuse(*loops), factors=[self.BLOCK_Y, self.BLOCK_X, None, 4])
            sch.vectorize(vec)
            sch.bind(fty, "threadIdx.y")
            sch.bind(ftx, "threadIdx.x")
            sch.storage_align(g2s, 0, axis=1, factor=16, offset=4)  # rows of 20 bytes: aligned int8x4
            auto_inline_producers(sch, g2s)
        auto_inline_consumer_chain(sch, l2g)
        init = sch.decompose_reduction(main, ko)
        del init
        sch.tensorize(k4, dp4a_intrinsic())
        return sch
