"""The int8 dot-product instruction of a CPU and the tensor intrinsic our GEMM rule tensorizes with.

One instruction step multiplies a group of ``KR`` consecutive values of a row of A (broadcast to
every lane) by a ``LANES x KR`` block of packed B and adds the ``KR`` products of each lane into
an int32 accumulator:

- ``vnni``    x86 ``vpdpbusd`` (AVX-512 VNNI, or AVX-VNNI at 256 bits): u8 x s8, ``KR = 4``. It
  needs unsigned A, so A is shifted by +128 (``a ^ 0x80``) and ``128 * colsum(B)`` is subtracted
  after the reduction — exact, the sums never saturate.
- ``pmaddwd`` x86 AVX2 / AVX-512BW ``vpmaddwd``: s16 x s16 pairs, ``KR = 2``, on A and B widened
  to int16 (A in a cheap pre-pass, B as it is loaded with ``vpmovsxbw``, so weights stay int8 in
  memory). Exact. We do not use ``vpmaddubsw``: its
  int16 pair sums saturate (255*127*2 > 32767), so results would differ from int32 arithmetic,
  and on the cores we measured it is no faster (both issue on the same two multiply pipes).
- ``sdot``    ARMv8.2 dot product ``sdot``: s8 x s8, ``KR = 4``. Exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecompile.lower.schedules.isa import VectorISA

INT8_GEMM_ATTR = "edgecompile.int8_gemm"  # GEMM block annotation: the tensor intrinsic to use
INT8_MR_ATTR = "edgecompile.int8_gemm_mr"  # GEMM block annotation: rows per register tile
A_PREP, B_PACK = "A_prep", "B_pack"  # the stages the GEMM rule schedules before the reduction


@dataclass(frozen=True)
class Int8Kernel:
    intrin: str  # registered tensor intrinsic name
    a_dtype: str  # A as the instruction reads it
    b_dtype: str  # packed B as the instruction reads it
    kr: int  # k values reduced per lane per instruction
    lanes: int  # int32 accumulators per vector register
    in_place: bool  # accumulates into its destination (pmaddwd needs a temporary + vpaddd)
    a_offset: int  # added to A before the product (compensated by B's column sums)
    acc_dtype: str = "int32"  # the accumulators' type (float32 for the bf16 dot product)

    @property
    def bf16_pairs(self) -> bool:
        """Both operands are ``uint32`` words of two bf16 (:mod:`~edgecompile.lower.schedules.bf16_pairs`):
        one word per step, so the GEMM has no unit ``k`` loop."""
        return self.a_dtype == "uint32"


def int8_kernel(isa: VectorISA) -> Int8Kernel | None:
    """The dot-product step for ``isa`` (registering its tensor intrinsic), or None without one."""
    lanes = isa.lanes(32)
    if isa.int8_dot == "vnni" and isa.bits in (256, 512):
        k = Int8Kernel(f"edgecompile_vpdpbusd_{lanes}x4", "uint8", "int8", 4, lanes, True, 128)
    elif isa.int8_dot == "pmaddwd" and isa.bits in (256, 512):
        k = Int8Kernel(f"edgecompile_pmaddwd_{lanes}x2", "int16", "int8", 2, lanes, False, 0)
    elif isa.int8_dot == "sdot" and isa.bits == 128:
        k = Int8Kernel("edgecompile_sdot_4x4", "int8", "int8", 4, 4, True, 0)
    else:
        return None
    _register(k, isa.bits)
    return k


def int16_kernel(isa: VectorISA) -> Int8Kernel | None:
    """The int16 x int16 -> int32 step of the activation GEMMs (:mod:`edgecompile.lower.activation_gemm`:
    attention's ``P V``, and ``Q K^T`` where ``vpdpbusd`` is missing), or None (ARM: no such instruction):

    - ``vnni``    ``vpdpwssd``: pairs of s16 products added into int32 lanes, in place.
    - ``pmaddwd`` ``vpmaddwd`` on both operands int16, its products added after.

    Exact: neither saturates, and int8 operands widened to int16 (or int16 probabilities in
    ``[0, 2^15)`` against int8 values) keep every pair sum far inside int32. Half the ``vpdpbusd``
    rate, but no ``+128`` shift and hence no column sums of the right operand."""
    lanes = isa.lanes(32)
    if isa.int8_dot == "vnni" and isa.bits in (256, 512):
        k = Int8Kernel(f"edgecompile_vpdpwssd_{lanes}x2", "int16", "int16", 2, lanes, True, 0)
    elif isa.int8_dot == "pmaddwd" and isa.bits in (256, 512):
        k = Int8Kernel(f"edgecompile_pmaddwd16_{lanes}x2", "int16", "int16", 2, lanes, False, 0)
    else:
        return None
    _register(k, isa.bits)
    return k


def bf16_kernel(isa: VectorISA) -> Int8Kernel | None:
    """The AVX-512 BF16 ``vdpbf16ps`` step (pairs of bf16 products summed into fp32 lanes), or None
    where the target lacks it. A and packed B stay float32 in memory and are rounded to bf16 (to
    nearest even) by ``vcvtne2ps2bf16`` as they are loaded: TVM 0.27 has no LLVM ``bfloat`` type
    (bf16 is i16 to its codegen, and its bf16 legalization rewrites bf16 operands into fp32), so
    the only ``<32 x bfloat>`` values it can hand the instruction are that conversion's results.
    The weights are stored already rounded, so their conversion is exact."""
    if not isa.bf16_dot or isa.bits != 512:
        return None
    k = Int8Kernel("edgecompile_dpbf16ps_16x2", "float32", "float32", 2, 16, True, 0, "float32")
    _register_bf16(k)
    return k


def _register_bf16(k: Int8Kernel) -> None:
    if k.intrin in _REGISTERED:
        return
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    lanes, kr = k.lanes, k.kr
    cvt = T.llvm_lookup_intrinsic_id("llvm.x86.avx512bf16.cvtne2ps2bf16.512")
    dot = T.llvm_lookup_intrinsic_id("llvm.x86.avx512bf16.dpbf16ps.512")

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (kr,), "float32", offset_factor=1)
        B = T.match_buffer(b, (lanes, kr), "float32", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:kr], B[0:lanes, 0:kr])
            T.writes(C[0:lanes])
            for i, r in T.grid(lanes, kr):
                with T.sblock("update"):
                    vi, vr = T.axis.remap("SR", [i, r])
                    C[vi] = C[vi] + A[vr] * B[vi, vr]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (kr,), "float32", offset_factor=1)
        B = T.match_buffer(b, (lanes, kr), "float32", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:kr], B[0:lanes, 0:kr])
            T.writes(C[0:lanes])
            # (a0, a1) in every 64-bit lane, converted twice over: a0 a1 a0 a1 ... in bf16. Written
            # inline: a let-bound bf16 value would be widened to fp32 by TVM's bf16 legalization.
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                dot,
                C.vload([0], "float32x16"),
                T.call_llvm_pure_intrin(
                    cvt,
                    T.reinterpret("float32x16", T.broadcast(T.reinterpret("float64", A.vload([0], "float32x2")), 8)),
                    T.reinterpret("float32x16", T.broadcast(T.reinterpret("float64", A.vload([0], "float32x2")), 8)),
                    dtype="bfloat16x32",
                ),
                T.call_llvm_pure_intrin(
                    cvt, B.vload([lanes // 2, 0], "float32x16"), B.vload([0, 0], "float32x16"), dtype="bfloat16x32"
                ),
                dtype="float32x16",
            )

    TensorIntrin.register(k.intrin, desc, impl, override=True)
    _REGISTERED.add(k.intrin)


_REGISTERED: set[str] = set()


def _llvm_intrinsic(k: Int8Kernel, bits: int) -> str:
    if "vpdpwssd" in k.intrin:
        return f"llvm.x86.avx512.vpdpwssd.{bits}"
    if k.a_dtype == "uint8":
        return f"llvm.x86.avx512.vpdpbusd.{bits}"
    if k.a_dtype == "int16":
        return "llvm.x86.avx2.pmadd.wd" if bits == 256 else "llvm.x86.avx512.pmaddw.d.512"
    return "llvm.aarch64.neon.sdot.v4i32.v16i8"


def _register(k: Int8Kernel, bits: int) -> None:
    if k.intrin in _REGISTERED:
        return
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    lanes, kr, a_dt, b_dt = k.lanes, k.kr, k.a_dtype, k.b_dtype
    a_group = f"{a_dt}x{kr}"  # one group of A: 32 bits
    elems = bits // (8 if a_dt != "int16" else 16)
    a_vec, b_vec, c_vec = f"{a_dt}x{elems}", f"{b_dt}x{elems}", f"int32x{lanes}"
    widen = a_dt != b_dt  # pmaddwd: B stays int8 in memory (half the bytes), sign-extended on load
    llvm = _llvm_intrinsic(k, bits)

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (kr,), a_dt, offset_factor=1)
        B = T.match_buffer(b, (lanes, kr), b_dt, offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:kr], B[0:lanes, 0:kr])
            T.writes(C[0:lanes])
            for i, r in T.grid(lanes, kr):
                with T.sblock("update"):
                    vi, vr = T.axis.remap("SR", [i, r])
                    C[vi] = C[vi] + T.Cast("int32", A[vr]) * T.Cast("int32", B[vi, vr])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (kr,), a_dt, offset_factor=1)
        B = T.match_buffer(b, (lanes, kr), b_dt, offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:kr], B[0:lanes, 0:kr])
            T.writes(C[0:lanes])
            a32 = T.reinterpret(A.vload([0], a_group), dtype="int32")
            a_all = T.reinterpret(T.broadcast(a32, lanes), dtype=a_vec)
            b_all = T.Cast(a_vec, B.vload([0, 0], b_vec)) if widen else B.vload([0, 0], b_vec)
            # vpdpbusd / sdot add into their accumulator operand; vpmaddwd's products are added after
            C[T.ramp(T.int32(0), 1, lanes)] = (
                T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(llvm), C.vload([0], c_vec), a_all, b_all, dtype=c_vec
                )
                if k.in_place
                else C.vload([0], c_vec)
                + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(llvm), a_all, b_all, dtype=c_vec)
            )

    TensorIntrin.register(k.intrin, desc, impl, override=True)
    _REGISTERED.add(k.intrin)
