"""GPU matmul rule: dlight's, with int8 tensor-core tiles only where TVM can compile them.

dlight's ``Matmul`` tensorizes int8 x int8 -> int32 GEMMs with WMMA tiles on sm_70+ when every
dimension exceeds 64. TVM 0.27's CUDA code generator rejects those schedules ("Check failed: it
!= fragment_info_.end()"; seen for a plain GEMM and with a fused bias add), so MiniLM's int8
build failed. This rule keeps a tensorized schedule when that kernel compiles on its own (a later
TVM may fix it) and otherwise schedules the same kernel without tensor cores
(``dlight.do_not_tensorize``): every int8 recipe builds, its GEMMs on CUDA cores (int32
multiply-adds). Fast int8 on NVIDIA GPUs (dp4a or mma.sync int8 tiles of our own) is still to
be written, and measured on a GPU.
"""

from __future__ import annotations

import tvm
from tvm.s_tir import dlight as dl


class Matmul(dl.gpu.Matmul):
    """dlight's GPU ``Matmul``, falling back from WMMA int8 tiles that do not compile."""

    def apply(self, func, target, tunable):
        sch = super().apply(func, target, tunable)
        if sch is None or target.kind.name != "cuda" or not _uses_wmma(sch):
            return sch
        try:
            probe = sch.mod["main"].with_attr("global_symbol", "edgecompile_probe")
            tvm.tirx.build(tvm.IRModule({"edgecompile_probe": probe}), target=target)
            return sch
        except Exception:  # noqa: BLE001 - TVM raises InternalError; any failure means "not this way"
            return super().apply(func.with_attr("dlight.do_not_tensorize", True), target, tunable)


def _uses_wmma(sch) -> bool:
    """Whether the schedule stages tiles in WMMA fragments (TIR has no Python visitor in 0.27)."""
    return "wmma." in sch.mod["main"].script()
