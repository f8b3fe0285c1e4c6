"""Our CPU schedules: rules applied to every PrimFunc after legalization and fusion.

Order matters: the first rule that accepts a function schedules it. ``Int8Matmul`` takes the
tensorized int8 GEMMs over packed weights, ``Matmul`` takes other GEMM-like
kernels with their fused epilogues, TVM's dlight ``GEMV`` takes matrix-vector products,
``RowReduction`` row reductions (softmax, LayerNorm) with their fused stages,
``ColumnReduction`` reductions over an outer axis (a dynamic scale's per-column max), dlight's
``Reduction`` the row reductions it declines, ``Elementwise`` takes everything injective, and
``Fallback`` whatever is left (full reductions), so no kernel stays an unscheduled loop nest.
"""

from __future__ import annotations

from edgecompile.lower.schedules.cpu_column_reduction import ColumnReduction
from edgecompile.lower.schedules.cpu_elementwise import Elementwise
from edgecompile.lower.schedules.cpu_fallback import Fallback
from edgecompile.lower.schedules.cpu_int8_matmul import Int8Matmul
from edgecompile.lower.schedules.cpu_matmul import Matmul
from edgecompile.lower.schedules.cpu_row_reduction import RowReduction


def cpu_rules() -> list:
    from tvm.s_tir.dlight import cpu as dl_cpu

    return [
        Int8Matmul(), Matmul(), dl_cpu.GEMV(), RowReduction(), ColumnReduction(), dl_cpu.Reduction(), Elementwise(),
        Fallback(),
    ]  # fmt: skip
