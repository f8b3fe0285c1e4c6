"""The ``fp16`` stage (and ``fp32``, the model as exported)."""

from __future__ import annotations

from edgecompile.ir.stage import Stage, StageContext


def _no_options(options: dict[str, str]) -> None:
    return None


def _apply_fp16(mod, _options, _ctx: StageContext):
    from edgecompile.half.rewrite import to_fp16

    return to_fp16(mod), None


FP32 = Stage("fp32", "the float model as exported, no rewrite", {}, _no_options, lambda m, _o, _c: (m, None), order=0)
FP16 = Stage(
    "fp16",
    "float16 matmuls with float32 accumulation (GPU targets' tensor cores; CPUs compile it through "
    "conversions); on Core ML, float16 everywhere, and fp16+int8 gives int8 weights with float16 activations",
    {},
    _no_options,
    _apply_fp16,
    order=30,
    exclusive=("int8", "int8-integer-only", "hash-attention"),
    exclusive_why="on TVM targets fp16 is a recipe of its own (add lowrank if you like); int8 with fp16 "
    "activations is a Core ML recipe",
)
