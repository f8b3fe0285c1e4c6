"""What the target's vector unit offers, from LLVM's feature list for the target's CPU."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VectorISA:
    bits: int  # vector register width
    registers: int  # architectural vector registers
    fma: bool
    int8_dot: str | None  # "vnni" (vpdpbusd), "pmaddwd" (AVX2 / AVX-512BW), "sdot" (ARM dotprod) or None
    bf16_dot: bool = False  # AVX-512 BF16 (vdpbf16ps)

    def lanes(self, dtype_bits: int) -> int:
        return max(1, self.bits // dtype_bits)


def vector_isa(target) -> VectorISA:
    """The vector ISA of an LLVM target (``llvm_get_vector_width`` reports 512 for every x86 CPU)."""
    from tvm.target.codegen import llvm_get_cpu_features

    feats = set(llvm_get_cpu_features(target))
    triple = str(target.attrs.get("mtriple", "")) if hasattr(target, "attrs") else ""
    if "avx512f" in feats:
        return VectorISA(512, 32, True, "vnni" if "avx512vnni" in feats else "pmaddwd", "avx512bf16" in feats)
    if "avx2" in feats:
        return VectorISA(256, 16, "fma" in feats, "vnni" if "avxvnni" in feats else "pmaddwd")
    if "neon" in feats or triple.startswith(("aarch64", "arm")):
        regs = 32 if triple.startswith("aarch64") or "aarch64" in feats else 16
        return VectorISA(128, regs, True, "sdot" if "dotprod" in feats else None)
    return VectorISA(128, 16, False, None)
