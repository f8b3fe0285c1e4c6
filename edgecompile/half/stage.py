"""The ``fp16`` and ``bf16`` stages (and ``fp32``, the model as exported)."""

from __future__ import annotations

from edgecompile.errors import RecipeError
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


def bf16_dot_target(tvm_target: dict) -> bool:
    """The TVM target (a profile's ``tvm`` dict) is an x86 CPU with AVX-512 BF16 (``vdpbf16ps``)."""
    import tvm
    from tvm.target.codegen import llvm_get_cpu_features

    if tvm_target.get("kind") != "llvm":
        return False
    return "avx512bf16" in set(llvm_get_cpu_features(tvm.target.Target(tvm_target)))


def _apply_bf16(mod, _options, ctx: StageContext):
    """Mark the module for the bf16 GEMM lowering; refused where the target has no bf16 dot product."""
    from edgecompile.ir.attrs import MATMUL_PRECISION_ATTR

    if not bf16_dot_target(ctx.profile.tvm):
        raise RecipeError(
            f"recipe bf16 needs a CPU with bf16 dot products (x86 AVX-512 BF16: Zen 4 and later, Cooper Lake, "
            f"Sapphire Rapids); target {ctx.profile.name} has none. Use fp32, or int8 for a faster build "
            "(ARM bfdot/bfmmla are not supported yet)"
        )
    entry = {
        "matmuls": "bf16 x bf16 -> fp32 (vdpbf16ps): activations and constant weights rounded to bf16",
        "other_ops": "float32",
    }
    return mod.with_attr(MATMUL_PRECISION_ATTR, "bf16"), entry


BF16 = Stage(
    "bf16",
    "bfloat16 matmuls with float32 accumulation on CPUs with bf16 dot products (x86 AVX-512 BF16); "
    "every other op in float32. Refused on targets without them",
    {},
    _no_options,
    _apply_bf16,
    order=30,
    manifest_key="bf16",
    exclusive=("fp16", "int8", "int8-integer-only"),
    exclusive_why="bf16 is a float recipe of its own (add lowrank or hash-attention if you like)",
)
