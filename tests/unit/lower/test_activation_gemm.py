"""Integer matmuls of two activations (attention's ``Q K^T`` and ``P V``) on the dot-product kernels
(:mod:`edgecompile.lower.activation_gemm`): bit-exact against numpy on every x86 ISA the host can
run, tensorized to ``vpdpwssd`` (AVX-512 VNNI) or ``vpmaddwd`` (AVX2), generic on ARM."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from edgecompile.lower.build import compile_module, make_target
from edgecompile.lower.pipeline import fusion_passes, schedule_passes
from edgecompile.runtime.hostinfo import cpu_flags
from edgecompile.targets import get_profile

FLAGS = cpu_flags()
# the profiles these kernels are built for, and the CPU features running them needs
RUNNABLE = {
    "x86_64-avx2": {"avx2", "fma"},
    "x86_64-avx512": {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"},
}


def _module(a_shape, a_dtype, b_shape, b_dtype, widen: bool, scale: bool):
    """``matmul(a, b) -> int32`` of two inputs (``b`` int8 widened to int16 first with ``widen``, as
    the int8 recipe's ``P V`` reads V); with ``scale`` dequantized by a row and a column scale, the
    epilogue of a dynamic ``Q K^T``."""
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType(a_shape, a_dtype))
    b = relax.Var("b", relax.TensorType(b_shape, b_dtype))
    params = [a, b]
    if scale:
        sa = relax.Var("sa", relax.TensorType((*a_shape[:-1], 1), "float32"))
        sb = relax.Var("sb", relax.TensorType((*b_shape[:-2], 1, b_shape[-1]), "float32"))
        params += [sa, sb]
    with bb.function("main", params):
        with bb.dataflow():
            rhs = bb.emit(relax.op.astype(b, "int16")) if widen else b
            y = bb.emit(relax.op.matmul(a, rhs, out_dtype="int32"))
            if scale:
                y = bb.emit(relax.op.multiply(relax.op.multiply(relax.op.astype(y, "float32"), sa), sb))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


CASES = {
    # name: (a shape, a dtype, b shape, b dtype, widen)
    "q-kt-128": ((1, 12, 128, 32), "int8", (1, 12, 32, 128), "int8", False),
    "p-v-128": ((1, 12, 128, 128), "int16", (1, 12, 128, 32), "int8", True),
    "ragged": ((2, 3, 13, 37), "int8", (2, 3, 37, 45), "int8", False),  # row, pair and panel tails
    "p-v-ragged": ((1, 2, 17, 197), "int16", (1, 2, 197, 64), "int8", True),
}


def _operands(case: str, rng):
    a_shape, a_dtype, b_shape, _, _ = CASES[case]
    if a_dtype == "int16":  # probabilities in [0, 2^15): the largest products the recipes make
        a = rng.integers(0, 2**15, a_shape).astype(np.int16)
        a[..., 0, :] = 2**15 - 1
    else:
        a = rng.integers(-128, 128, a_shape).astype(np.int8)
        a[..., 0, :] = -128
    b = rng.integers(-128, 128, b_shape).astype(np.int8)
    b[..., 0] = -128
    return a, b


@pytest.mark.parametrize("profile", sorted(RUNNABLE))
@pytest.mark.parametrize("case", sorted(CASES))
def test_activation_gemm_is_exact(profile, case):
    if not RUNNABLE[profile] <= FLAGS:
        pytest.skip(f"this CPU lacks {sorted(RUNNABLE[profile] - FLAGS)} to run {profile} code")
    a_shape, a_dtype, b_shape, b_dtype, widen = CASES[case]
    a, b = _operands(case, np.random.default_rng(len(case)))
    ex = compile_module(_module(a_shape, a_dtype, b_shape, b_dtype, widen, False), get_profile(profile).resolved())
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b)).numpy()
    np.testing.assert_array_equal(got, (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32))


@pytest.mark.parametrize("profile", sorted(RUNNABLE))
def test_dequantize_epilogue_is_fused_and_exact(profile):
    """A dynamic ``Q K^T``: the int32 sums scaled per row of Q and per column of K^T, in the GEMM's
    kernel (one kernel), equal to numpy's float32 product of the same sums and scales."""
    if not RUNNABLE[profile] <= FLAGS:
        pytest.skip(f"this CPU lacks {sorted(RUNNABLE[profile] - FLAGS)} to run {profile} code")
    a_shape, a_dtype, b_shape, b_dtype, _ = CASES["q-kt-128"]
    rng = np.random.default_rng(3)
    a, b = _operands("q-kt-128", rng)
    sa = rng.uniform(0.01, 0.1, (*a_shape[:-1], 1)).astype(np.float32)
    sb = rng.uniform(0.01, 0.1, (*b_shape[:-2], 1, b_shape[-1])).astype(np.float32)
    mod = _module(a_shape, a_dtype, b_shape, b_dtype, False, True)
    target = make_target(get_profile(profile).resolved())
    with target:
        fused = tvm.transform.Sequential(fusion_passes(target))(mod)
    kernels = [gv.name_hint for gv, f in fused.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    gemms = [k for k in kernels if "gemm" in k]
    # with VNNI (vpdpbusd) a kernel of its own sums K^T's columns first: A is shifted by +128
    assert len(gemms) == 1 and set(kernels) - set(gemms) <= {"colsum"}, kernels
    assert ("colsum" in kernels) == (profile == "x86_64-avx512"), kernels
    ex = compile_module(mod, get_profile(profile).resolved())
    args = [tvm.runtime.tensor(v) for v in (a, b, sa, sb)]
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](*args).numpy()
    acc = (a.astype(np.int64) @ b.astype(np.int64)).astype(np.float32)
    np.testing.assert_array_equal(got, acc * sa * sb)


@pytest.mark.parametrize(
    "profile, case, intrinsic",
    [("x86_64-avx2", "p-v-128", "llvm.x86.avx2.pmadd.wd"), ("x86_64-avx2", "q-kt-128", "llvm.x86.avx2.pmadd.wd"),
     ("x86_64-avx512", "p-v-128", "llvm.x86.avx512.vpdpwssd.512"),
     ("x86_64-avx512", "q-kt-128", "llvm.x86.avx512.vpdpbusd.512"), ("android-arm64", "p-v-128", None)],
)  # fmt: skip
def test_activation_gemm_uses_the_dot_product(profile, case, intrinsic):
    """Tensorized, in parallel: int16 steps for ``P V`` (and for ``Q K^T`` without VNNI), ``vpdpbusd``
    for ``Q K^T`` with VNNI; ARM has no int16 dot product (``sdot`` is int8): ``P V`` stays on the
    generic path there."""
    target = make_target(get_profile(profile).resolved())
    a_shape, a_dtype, b_shape, b_dtype, widen = CASES[case]
    with target:
        mod = tvm.transform.Sequential(fusion_passes(target) + schedule_passes(target))(
            _module(a_shape, a_dtype, b_shape, b_dtype, widen, False)
        )
    text = "\n".join(f.script() for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    if intrinsic is None:
        assert "_gemm" not in text and "vpdpwssd" not in text
    else:
        assert intrinsic in text and "T.parallel" in text


@pytest.mark.parametrize("case", ["p-v-128", "ragged"])
def test_kernel_table_counts_the_tensorized_products(case):
    """``bench --profile`` divides a kernel's estimated operations by its time: for a GEMM tensorized
    to a dot-product step each instance of the block is LANES x KR products (it read 1/32 of the
    truth: an int8 FFN at 275 GOP/s showed as 5.7). Counted: within the row and column padding
    (whole register tiles and panels) and the packing passes of the exact ``2 M N K``."""
    from edgecompile.lower.kernel_table import estimated_ops

    target = make_target(get_profile("x86_64-avx512").resolved())
    a_shape, a_dtype, b_shape, b_dtype, widen = CASES[case]
    with target:
        mod = tvm.transform.Sequential(fusion_passes(target) + schedule_passes(target))(
            _module(a_shape, a_dtype, b_shape, b_dtype, widen, False)
        )
    (gemm,) = [f for gv, f in mod.functions.items() if "gemm" in gv.name_hint]
    exact = 2 * int(np.prod(a_shape)) * b_shape[-1]
    assert exact <= estimated_ops(gemm) <= 2 * exact  # 13 rows padded to 18, 45 columns to 48: 1.6x
