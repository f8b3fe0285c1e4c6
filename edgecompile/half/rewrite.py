"""fp16 on TVM targets: TVM's automatic mixed precision, with fp32 accumulation.

``ToMixedPrecision`` casts the inputs of matmuls and convolutions to float16 and accumulates them
in float32 (what cuBLAS and PyTorch do for fp16 GEMMs, so rounding does not grow with the inner
dimension); ops that follow their inputs (adds, reshapes, GELU) stay in float16 between them, and
TVM keeps numerically fragile ops (softmax, LayerNorm statistics) in float32. The model's inputs
and outputs keep their types. Meant for GPU targets with fp16 arithmetic (tensor cores on CUDA);
a CPU target compiles it too, through conversions, and is slower than fp32 there.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def to_fp16(mod):
    """``mod`` with matmuls/convolutions in float16 and fp32 accumulation (see the module docstring)."""
    from tvm import relax

    mod = relax.transform.ConvertToDataflow()(mod)
    mod = relax.transform.ToMixedPrecision(out_dtype="float32")(mod)
    # casts of constant weights become float16 constants: half the size, no cast per inference
    return relax.transform.FoldConstant()(mod)
