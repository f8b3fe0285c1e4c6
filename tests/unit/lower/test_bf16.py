"""The bf16 recipe: float matmuls with constant weights on AVX-512 BF16's ``vdpbf16ps`` (fp32
accumulation), everything else fp32. Rounding to bf16 equals ml_dtypes' bit for bit; the GEMM equals
a float64 product of the bf16-rounded operands to fp32 accumulation error (1e-5 of the output range)
and differs from the fp32 product by bf16's own rounding (so the bf16 kernel did run); a model
compiled with it stays within cosine 0.999 of ONNX Runtime. The kernels run only where this CPU has
avx512_bf16 (they skip elsewhere, saying so); the refusal on other targets is tested everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from helpers import EXAMPLE_ONNX
from tvm import relax

import edgecompile
from edgecompile.errors import RecipeError
from edgecompile.ir.attrs import MATMUL_PRECISION_ATTR
from edgecompile.lower.build import compile_module
from edgecompile.lower.pack_weights import bf16_round
from edgecompile.runtime.hostinfo import cpu_flags
from edgecompile.targets import get_profile

needs_bf16 = pytest.mark.skipif(
    "avx512_bf16" not in cpu_flags(), reason="this CPU has no AVX-512 BF16: the bf16 kernels cannot run here"
)
SHAPES = {"encoder 128x384x384": (128, 384, 384), "ragged rows, odd K": (197, 97, 192)}


def test_bf16_rounding_equals_ml_dtypes_ties_and_specials_included():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4096).astype(np.float32) * np.float32(1e3)
    ties = (np.arange(64, dtype=np.uint32) << 16 | 0x8000).view(np.float32)  # exactly halfway
    x = np.concatenate([x, ties, np.float32([0.0, -0.0, np.inf, -np.inf, 3.4e38, 1e-40])])
    want = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(bf16_round(x).view(np.uint32), want.view(np.uint32))


def _matmul(m: int, k: int, n: int, w: np.ndarray):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((m, k), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.add(relax.op.matmul(x, relax.const(w)), relax.const(np.float32(0.5))))
        bb.emit_func_output(y)
    return bb.get().with_attr(MATMUL_PRECISION_ATTR, "bf16")


@needs_bf16
@pytest.mark.parametrize("case", list(SHAPES))
def test_bf16_gemm_equals_the_product_of_bf16_operands(case):
    m, k, n = SHAPES[case]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    ex = compile_module(_matmul(m, k, n, w), get_profile("native").resolved())
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    bf = bf16_round(x).astype(np.float64) @ bf16_round(w).astype(np.float64) + 0.5
    fp = x.astype(np.float64) @ w.astype(np.float64) + 0.5
    scale = float(np.abs(bf).max())
    assert np.abs(got - bf).max() < 1e-5 * scale
    assert np.abs(got - fp).max() > 1e-4 * scale  # bf16 operands, not fp32 ones


# K a whole number of 32-float groups: both operands stored as bf16 pairs (bf16_pairs.py); else
# the kernel that converts both operands at every step
KERNELS = {"encoder 128x384x384": "edgecompile_dpbf16ps_pairs_16", "ragged rows, odd K": "edgecompile_dpbf16ps_16x2"}


@pytest.mark.parametrize("case", list(SHAPES))
def test_bf16_gemm_takes_the_pairs_kernel_where_k_allows(case):
    """Which dot-product step each GEMM is built on (a compile-time choice: checked on any host,
    for a Zen 4 target), and that the pairs GEMM's A stage is the tensorized conversion."""
    from tvm import tirx

    from edgecompile.lower.pipeline import fusion_passes, schedule_passes
    from edgecompile.lower.schedules.int8_dot import INT8_GEMM_ATTR

    m, k, n = SHAPES[case]
    w = np.random.default_rng(3).standard_normal((k, n)).astype(np.float32)
    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver4"})
    with target:
        mod = tvm.transform.Sequential(fusion_passes(target) + schedule_passes(target))(_matmul(m, k, n, w))
    scripts = [f.script() for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]
    gemm = [sc for sc in scripts if INT8_GEMM_ATTR in sc]
    assert len(gemm) == 1 and f'"{KERNELS[case]}"' in gemm[0]
    assert ("cvtne2ps2bf16" in gemm[0].split('sblock("int8_gemm')[0]) == ("pairs" in KERNELS[case])


@needs_bf16
def test_bf16_pairs_round_activations_to_nearest_even():
    """A GEMM on the pairs kernel against the identity returns its input as the A stage rounded it:
    bit for bit numpy's bf16 rounding (to nearest, ties to even, both signs, large and small)."""
    rng = np.random.default_rng(4)
    ties = ((np.arange(1024, dtype=np.uint32) % 512 + 0x3F00) << 16 | 0x8000).view(np.float32)  # halfway
    x = np.concatenate([ties, rng.standard_normal(1024).astype(np.float32) * np.float32(1e4)])
    x = (x * np.where(np.arange(2048) % 3 == 0, -1, 1)).astype(np.float32).reshape(32, 64)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((32, 64), "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.matmul(xv, relax.const(np.eye(64, dtype=np.float32))))
        bb.emit_func_output(y)
    ex = compile_module(bb.get().with_attr(MATMUL_PRECISION_ATTR, "bf16"), get_profile("native").resolved())
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got.view(np.uint32), bf16_round(x).view(np.uint32))
    assert not np.array_equal(got, x)


def test_bf16_recipe_refused_where_the_target_has_no_bf16_dot_product(tmp_path):
    shapes = {"input_ids": (1, 16), "attention_mask": (1, 16)}
    with pytest.raises(RecipeError, match="needs a CPU with bf16 dot products.*x86_64-avx2"):
        edgecompile.compile(
            EXAMPLE_ONNX, output=tmp_path / "a", recipe="bf16", target="x86_64-avx2", input_shapes=shapes
        )
    assert not (tmp_path / "a").exists()


@needs_bf16
def test_bf16_model_stays_within_cosine_0999_of_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    shapes = {"input_ids": (1, 32), "attention_mask": (1, 32)}
    art = edgecompile.compile(EXAMPLE_ONNX, output=tmp_path / "a", recipe="bf16", input_shapes=shapes)
    model = edgecompile.load(art)
    assert model.manifest["bf16"]["matmuls"].startswith("bf16 x bf16 -> fp32")
    assert any(k["name"].startswith("fused_bf16_gemm") for k in model.manifest["kernels"])
    rng = np.random.default_rng(2)
    feeds = {"input_ids": rng.integers(0, 1000, (1, 32)).astype(np.int64), "attention_mask": np.ones((1, 32), np.int64)}
    sess = ort.InferenceSession(str(EXAMPLE_ONNX), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ref = dict(zip(names, sess.run(None, feeds)))
    got = model.run(feeds)
    for name in names:
        a, b = ref[name].ravel().astype(np.float64), got[name].ravel().astype(np.float64)
        cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        assert cos >= 0.999, (name, cos)
        assert not np.array_equal(a, b)  # it is not the fp32 build
