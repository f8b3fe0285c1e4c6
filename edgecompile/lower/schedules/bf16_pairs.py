"""bf16 GEMM operands stored as bf16 pairs, fed to AVX-512 BF16's ``vdpbf16ps`` straight from memory.

``vdpbf16ps`` multiplies the two bf16 halves of every 32-bit lane of its operands and adds both
products into an fp32 lane. Here both operands are stored that way: a ``uint32`` word holds
``(bf16(v[2k]), bf16(v[2k + 1]))``, low half first. Packed B (the weights, converted once at compile
time) is ``[N / NR, K / 2, NR, 1]`` words; A (the activations) is converted by the GEMM's own
first stage, 32 floats per ``vcvtne2ps2bf16``, whose 32 results in order are exactly 16 such
words. The dot step then loads one B vector and broadcasts one A word: no conversion in the
GEMM's inner loop (:func:`edgecompile.lower.schedules.int8_dot.bf16_kernel` converts both
operands at every step). A 6x64 register tile over K = 384, Zen 4, 1 thread: 190 GFLOP/s
converting, 235 from pairs.

TVM 0.27 cannot hand ``vdpbf16ps`` a bf16 operand it loaded: it has no LLVM ``bfloat`` type of
its own (bf16 values are i16 to its codegen, its bf16 legalization widens bf16 arguments to fp32,
and a bf16 value of its own making crashes the codegen), and it never bitcasts an intrinsic's
arguments. So the step calls a four-line LLVM function that bitcasts two ``<16 x i32>`` to
``<32 x bfloat>`` and calls the intrinsic; the function comes into the module through TIR's
``pragma_import_llvm`` and is inlined (``alwaysinline``; ``linkonce_odr`` lets every kernel import
it). The word semantics the tensorized blocks are written in (:func:`pair_bits`,
:func:`pair_product`) are the same arithmetic in TIR: what the GEMM means before it is tensorized.
"""

from __future__ import annotations

from tvm import tirx

from edgecompile.lower.schedules.int8_dot import Int8Kernel
from edgecompile.lower.schedules.isa import VectorISA

PACK_INTRIN = "edgecompile_bf16_pairs_pack_16"  # 32 floats -> 16 words
PAIR_GROUP = 32  # floats per packing step: K must be a multiple (K / 2 words in whole steps)
_DOT = "edgecompile_dpbf16ps_pairs"
_IR = f"""
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
define linkonce_odr <16 x float> @{_DOT}(<16 x float> %c, <16 x i32> %a, <16 x i32> %b) alwaysinline {{
  %x = bitcast <16 x i32> %a to <32 x bfloat>
  %y = bitcast <16 x i32> %b to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %c, <32 x bfloat> %x, <32 x bfloat> %y)
  ret <16 x float> %r
}}
"""
_REGISTERED: set[str] = set()


def _u32(v: int):
    return tirx.const(v, "uint32")


def _rne(u):
    """The bf16 bits of the fp32 bits ``u`` (uint32), rounded to nearest, ties to even."""
    return (u + _u32(0x7FFF) + ((u >> _u32(16)) & _u32(1))) >> _u32(16)


def pair_bits(lo, hi):
    """The word holding ``(bf16(lo), bf16(hi))`` for two float32 values (``vcvtne2ps2bf16``'s
    rounding; a signalling NaN may round to infinity here, where the instruction quiets it)."""
    return _rne(tirx.reinterpret("uint32", lo)) | (_rne(tirx.reinterpret("uint32", hi)) << _u32(16))


def _low(w):
    return tirx.reinterpret("float32", w << _u32(16))


def _high(w):
    return tirx.reinterpret("float32", w & _u32(0xFFFF0000))


def pair_product(a, b):
    """The fp32 sum of the two products of two words' bf16 halves."""
    return _low(a) * _low(b) + _high(a) * _high(b)


def bf16_pair_kernel(isa: VectorISA) -> Int8Kernel | None:
    """The pairs step (registering its tensor intrinsics), or None where the target lacks AVX-512 BF16."""
    if not isa.bf16_dot or isa.bits != 512:
        return None
    k = Int8Kernel("edgecompile_dpbf16ps_pairs_16", "uint32", "uint32", 1, 16, True, 0, "float32")
    if k.intrin not in _REGISTERED:
        _register_dot(k)
        _register_pack()
        _REGISTERED.add(k.intrin)
    return k


def _register_dot(k: Int8Kernel) -> None:
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    lanes = k.lanes

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (1,), "uint32", offset_factor=1)
        B = T.match_buffer(b, (lanes, 1), "uint32", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:1], B[0:lanes, 0:1])
            T.writes(C[0:lanes])
            for i in T.serial(lanes):  # one word per lane: the GEMM's unit k loop is no loop
                with T.sblock("update"):
                    vi = T.axis.remap("S", [i])
                    C[vi] = C[vi] + pair_product(A[0], B[vi, 0])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (1,), "uint32", offset_factor=1)
        B = T.match_buffer(b, (lanes, 1), "uint32", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:1], B[0:lanes, 0:1])
            T.writes(C[0:lanes])
            with T.attr(0, "pragma_import_llvm", _IR):
                C[T.ramp(T.int32(0), 1, lanes)] = T.call_pure_extern(
                    "float32x16", _DOT, C.vload([0], "float32x16"), T.broadcast(A[0], lanes),
                    B.vload([0, 0], "uint32x16"),
                )  # fmt: skip

    TensorIntrin.register(k.intrin, desc, impl, override=True)


def _register_pack() -> None:
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    cvt = "llvm.x86.avx512bf16.cvtne2ps2bf16.512"

    @T.prim_func(s_tir=True)
    def desc(x: T.handle, p: T.handle) -> None:
        X = T.match_buffer(x, (32,), "float32", offset_factor=1)
        P = T.match_buffer(p, (16,), "uint32", offset_factor=1)
        with T.sblock("root"):
            T.reads(X[0:32])
            T.writes(P[0:16])
            for w in T.serial(16):
                with T.sblock("pack"):
                    vw = T.axis.remap("S", [w])
                    P[vw] = pair_bits(X[vw * 2], X[vw * 2 + 1])

    @T.prim_func(s_tir=True)
    def impl(x: T.handle, p: T.handle) -> None:
        X = T.match_buffer(x, (32,), "float32", offset_factor=1)
        P = T.match_buffer(p, (16,), "uint32", offset_factor=1)
        with T.sblock("root"):
            T.reads(X[0:32])
            T.writes(P[0:16])
            # (hi, lo): the 32 results in order, words (x[2w], x[2w + 1]). Typed int32x16 in TIR,
            # so TVM's bf16 legalization leaves it alone; LLVM's value is the <32 x bfloat>.
            P[T.ramp(T.int32(0), 1, 16)] = T.reinterpret(
                "uint32x16",
                T.call_llvm_pure_intrin(
                    "int32x16", T.llvm_lookup_intrinsic_id(cvt), X.vload([16], "float32x16"), X.vload([0], "float32x16")
                ),
            )

    TensorIntrin.register(PACK_INTRIN, desc, impl, override=True)
