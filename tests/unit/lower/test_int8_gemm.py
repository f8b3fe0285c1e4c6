"""int8 x int8 -> int32 GEMMs: bit-exact against numpy, tensorized to the target's dot-product
instruction (vpmaddwd on AVX2, vpdpbusd on AVX-512 VNNI, sdot on ARM dotprod), with a fused
requantize epilogue."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import tvm
from tvm import relax

from edgecompile.lower.build import compile_module, make_target
from edgecompile.lower.pipeline import fusion_passes, schedule_passes
from edgecompile.targets import get_profile

HOST_AVX2 = "avx2" in open("/proc/cpuinfo").read()


def _gemm_module(x_shape, w, bias=None, requant=None):
    """``matmul(x, W) (+ bias)``, then optionally ``clip((acc * m + 2^(s-1)) >> s)`` to int8."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(w), out_dtype="int32"))
            if bias is not None:
                y = bb.emit(relax.op.add(y, relax.const(bias)))
            if requant is not None:
                m, s = requant
                y = bb.emit(relax.op.astype(y, "int64"))
                y = bb.emit(
                    relax.op.add(relax.op.multiply(y, relax.const(m, "int64")), relax.const(1 << (s - 1), "int64"))
                )
                y = bb.emit(relax.op.right_shift(y, relax.const(s, "int64")))
                y = bb.emit(relax.op.astype(relax.op.clip(y, -128, 127), "int8"))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def _reference(x, w, bias=None, requant=None):
    acc = x.astype(np.int64) @ w.astype(np.int64)
    if bias is not None:
        acc = acc + bias
    if requant is None:
        return acc.astype(np.int32)
    m, s = requant
    return np.clip((acc * m + (1 << (s - 1))) >> s, -128, 127).astype(np.int8)


def _run(mod, x):
    ex = compile_module(mod, get_profile("x86_64-avx2").resolved())
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.skipif(not HOST_AVX2, reason="this machine cannot run AVX2 code")
@pytest.mark.parametrize(
    "shape",
    [
        (1, 128, 384, 1536),  # MiniLM FFN up
        (1, 197, 192, 768),  # ViT: 197 rows pad to whole tiles
        (2, 5, 33, 24),  # batch, odd K (padded to pairs), one-vector tiles
        (1, 7, 30, 20),  # N not a multiple of the vector: the generic int32 kernel
    ],
)
def test_int8_gemm_is_exact(shape):
    b, m, k, n = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-128, 128, (b, m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)  # -128 too: the extreme products
    x[0, 0, :] = -128
    w[:, 0] = -128
    np.testing.assert_array_equal(_run(_gemm_module(x.shape, w), x), _reference(x, w))


@pytest.mark.skipif(not HOST_AVX2, reason="this machine cannot run AVX2 code")
def test_int8_gemm_with_fused_requantize_is_exact():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (1, 64, 96), dtype=np.int8)
    w = rng.integers(-127, 128, (96, 48), dtype=np.int8)
    bias = rng.integers(-5000, 5000, 48).astype(np.int32)
    requant = (1518500250, 45)  # a dyadic multiplier m / 2^s ~ 4.3e-5
    mod = _gemm_module(x.shape, w, bias, requant)
    got = _run(mod, x)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, _reference(x, w, bias, requant))
    # the requantize was fused into the GEMM kernel: one kernel, not a GEMM and an epilogue
    target = make_target(get_profile("x86_64-avx2").resolved())
    with target:
        fused = tvm.transform.Sequential(fusion_passes(target))(mod)
    kernels = [gv.name_hint for gv, f in fused.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(kernels) == 1 and "int8_gemm" in kernels[0], kernels


@pytest.mark.parametrize(
    "profile, intrinsic",
    [
        ("x86_64-avx2", "llvm.x86.avx2.pmadd.wd"),
        ("x86_64-avx512", "llvm.x86.avx512.vpdpbusd.512"),
        ("android-arm64", "llvm.aarch64.neon.sdot"),
    ],
)
def test_int8_gemm_uses_the_dot_product_instruction(profile, intrinsic):
    w = np.ones((64, 96), np.int8)
    target = make_target(get_profile(profile).resolved())
    with target:
        mod = tvm.transform.Sequential(fusion_passes(target) + schedule_passes(target))(_gemm_module((1, 32, 64), w))
    text = "\n".join(f.script() for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    assert intrinsic in text
    assert "T.parallel" in text


@pytest.mark.parametrize(
    "profile, objdump, instruction",
    [("x86_64-avx512", "objdump", "vpdpbusd"), ("aarch64-linux-dotprod", "aarch64-linux-gnu-objdump", "sdot")],
)
def test_int8_gemm_machine_code(tmp_path, profile, objdump, instruction):
    """The instruction is in the compiled library (the code cannot run on this machine)."""
    if shutil.which(objdump) is None:
        pytest.skip(f"{objdump} is not installed (scripts/test.sh installs it)")
    if profile == "aarch64-linux-dotprod":
        prof = get_profile("aarch64-linux").resolved()
        prof.tvm["mattr"] = ["+neon", "+dotprod"]
        cc = "aarch64-linux-gnu-gcc"
    else:
        prof, cc = get_profile(profile).resolved(), None
    w = np.ones((64, 96), np.int8)
    ex = compile_module(_gemm_module((1, 32, 64), w), prof)
    lib = tmp_path / "lib.so"
    if cc:
        from tvm.support import cc as tvm_cc

        ex.export_library(str(lib), fcompile=tvm_cc.cross_compiler(cc))
    else:
        ex.export_library(str(lib))
    asm = subprocess.run([objdump, "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    assert instruction in asm
