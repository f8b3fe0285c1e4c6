"""Our CPU schedules: every kernel of the example models is scheduled (none left as TVM's
default loop nest), and each scheduled kernel computes what the unscheduled one computes."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from helpers import EXAMPLE_ONNX
from tvm import tirx

from edgecompile.frontend import import_model
from edgecompile.lower.pipeline import pre_legalize_passes, schedule_passes
from edgecompile.lower.schedules.isa import vector_isa

TARGETS = {
    "avx2": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"},
    "avx512": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake"},
    "neon": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"]},
}


def _models():
    torch = pytest.importorskip("torch")
    from models import EncoderStack, TinyViT

    yield "tiny_bert", import_model(EXAMPLE_ONNX, {"input_ids": (1, 32), "attention_mask": (1, 32)}).mod
    yield "vit", import_model(TinyViT(), example_inputs=(torch.randn(1, 3, 32, 32),)).mod
    yield "encoder", import_model(EncoderStack(norm_first=True), example_inputs=(torch.randn(1, 20, 64),)).mod


def _legalized(mod, target):
    from tvm.relax.backend.cpu_generic import pipeline as generic

    seq = tvm.transform.Sequential(
        generic.library_dispatch_passes(target) + pre_legalize_passes(target) + generic.legalize_passes(target)
    )
    with target:
        return seq(mod)


@pytest.fixture(scope="module")
def legalized():
    target = tvm.target.Target(TARGETS["avx2"])
    return {name: _legalized(mod, target) for name, mod in _models()}


@pytest.mark.parametrize("target_name", list(TARGETS))
def test_every_kernel_is_scheduled(legalized, target_name):
    target = tvm.target.Target(TARGETS[target_name])
    for name, mod in legalized.items():
        with target:
            scheduled = tvm.transform.Sequential(schedule_passes(target))(mod)
        packed = False
        funcs = {gv.name_hint: f for gv, f in scheduled.functions.items() if isinstance(f, tirx.PrimFunc)}
        assert funcs
        left = [n for n, f in funcs.items() if not f.attrs.get("tirx.is_scheduled", False)]
        assert not left, f"{name} on {target_name}: unscheduled kernels {left}"
        # GEMMs get the register-blocked kernel (vectorized); matrix-vector products (one row,
        # e.g. a pooler or classifier head) go to dlight's rules, parallel over outputs.
        for n, f in funcs.items():
            text = f.script()
            if "matmul" in n:
                packed |= "packed" in n
                gemv = any(int(p.shape[-2]) == 1 for p in f.params[:1] if len(p.shape) >= 2)
                assert ("parallel" if gemv else "vectorized") in text, f"{name}:{n} is not blocked"
        assert packed, f"{name}: no GEMM reads packed weights"
        assert not [n for n in funcs if "conv2d" in n], "the patch-embedding conv should have become a GEMM"


def _run(func, target, args):
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
    tensors = [tvm.runtime.tensor(a) for a in args]
    lib["main"](*tensors)
    return [t.numpy() for t in tensors]


def test_scheduled_kernels_equal_unscheduled(legalized):
    target = tvm.target.Target(TARGETS["avx2"])
    if "avx2" not in open("/proc/cpuinfo").read():
        pytest.skip("this machine cannot run AVX2 code")
    rng = np.random.default_rng(0)
    checked = 0
    for name, mod in legalized.items():
        with target:
            scheduled = tvm.transform.Sequential(schedule_passes(target))(mod)
        for gv, func in mod.functions.items():
            if not isinstance(func, tirx.PrimFunc):
                continue
            args = []
            for p in func.params:
                shape, dtype = [int(s) for s in p.shape], str(p.dtype)
                if "float" in dtype:
                    args.append(rng.uniform(-2, 2, shape).astype(dtype))
                else:
                    args.append(rng.integers(0, 2, shape).astype(dtype))
            ref = _run(func, target, [a.copy() for a in args])
            got = _run(scheduled[gv.name_hint], target, [a.copy() for a in args])
            for r, g in zip(ref, got):
                np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5, err_msg=f"{name}:{gv.name_hint}")
            checked += 1
    assert checked >= 15


def test_vector_isa_from_target():
    assert vector_isa(tvm.target.Target(TARGETS["avx2"])).bits == 256
    isa = vector_isa(tvm.target.Target(TARGETS["avx512"]))
    assert isa.bits == 512 and isa.int8_dot == "vnni"
    neon = vector_isa(tvm.target.Target(TARGETS["neon"]))
    assert neon.bits == 128 and neon.int8_dot == "sdot"


@pytest.mark.parametrize("m", [17, 197, 257])
@pytest.mark.parametrize("epilogue", [False, True])
@pytest.mark.parametrize("seq_first", [False, True])
@pytest.mark.parametrize("n", [96, 360])
def test_ragged_rows_over_packed_weights(m, epilogue, seq_first, n):
    """Row counts no register tile divides (ViT's 197 tokens) are computed to whole tiles and the real
    rows kept: the result is numpy's, with and without a fused epilogue, for torch's
    sequence-first ``[S, 1, K]`` layout (its rows are the first axis, not the second last) and for
    a column count no tile divides (MobileViT's 360: W padded with zero columns)."""
    from tvm import relax

    from edgecompile.lower.build import compile_module
    from edgecompile.targets import get_profile

    rng = np.random.default_rng(m)
    k = 64
    w = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    bb = relax.BlockBuilder()
    shape = (m, 1, k) if seq_first else (1, m, k)
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = relax.op.matmul(x, relax.const(w))
            if epilogue:
                y = relax.op.nn.gelu(relax.op.add(y, relax.const(bias)))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    profile = get_profile("native").resolved()
    from edgecompile.lower.build import make_target
    from edgecompile.lower.pipeline import fusion_passes

    target = make_target(profile)
    with target:
        fused = tvm.transform.Sequential(fusion_passes(target))(bb.get())
    scripts = [f.script() for _, f in fused.functions_items() if isinstance(f, tirx.PrimFunc)]
    assert any('"matmul_rows"' in sc for sc in scripts)  # the padded form, not a guarded row tail
    vm = relax.VirtualMachine(compile_module(bb.get(), profile), tvm.cpu())
    xv = rng.standard_normal(shape).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(xv)).numpy()
    ref = xv @ w
    if epilogue:
        from scipy.special import erf

        ref = ref + bias
        ref = 0.5 * ref * (1 + erf(ref / np.sqrt(2)))
    assert got.shape == shape[:2] + (n,)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def _row_kernel(op: str, rows: int, width: int):
    """The legalized PrimFunc of ``op`` (softmax with our polynomial exp, as the CPU pipeline
    lowers it, or LayerNorm) over [rows, width]."""
    from tvm import relax

    from edgecompile.passes.poly_exp import PolynomialExp

    rng = np.random.default_rng(width)
    gamma, beta = rng.uniform(0.5, 1.5, width).astype("float32"), rng.uniform(-1, 1, width).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((rows, width), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            if op == "softmax":
                y = relax.op.nn.softmax(x, axis=-1)
            else:
                y = relax.op.nn.layer_norm(x, relax.const(gamma), relax.const(beta), axes=[-1])
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(relax.transform.FastMathTransform()(PolynomialExp()(bb.get())))
    func = next(f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc))
    return func, [gamma, beta] if op == "layer_norm" else []


@pytest.mark.parametrize("op", ["softmax", "layer_norm"])
@pytest.mark.parametrize("width", [49, 197, 257, 256])
@pytest.mark.parametrize("partition", [True, False])
def test_ragged_rows_of_row_reductions(op, width, partition):
    """Softmax and LayerNorm over rows that are not whole vectors (a ViT's 197 keys) take our row
    rule, not dlight's, and equal numpy: TVM's compute_at drops the partial accumulators' guards,
    which the rule restores (without them the last vector sums past the row: a softmax off by up to
    0.4). The result must not depend on the loop partitioning that only makes the tail cheaper."""
    from edgecompile.lower.schedules.cpu_row_reduction import TIR_CONFIG, RowReduction

    isa = "avx512" if "avx512f" in open("/proc/cpuinfo").read() else "avx2"
    if isa not in open("/proc/cpuinfo").read():
        pytest.skip("this machine cannot run AVX2 code")
    target = tvm.target.Target(TARGETS[isa])
    func, consts = _row_kernel(op, 37, width)
    sch = RowReduction().apply(func, target, False)
    assert sch is not None, f"{op} over {width}-wide rows was declined"
    with tvm.transform.PassContext(config=TIR_CONFIG if partition else {}):
        lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target)
    x = np.random.default_rng(1).normal(0, 3, (37, width)).astype("float32")
    out = tvm.runtime.tensor(np.zeros_like(x))
    lib["main"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(c) for c in consts), out)
    if op == "softmax":
        ref = np.exp(x - x.max(-1, keepdims=True))
        ref /= ref.sum(-1, keepdims=True)
    else:
        ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * consts[0] + consts[1]
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("width", [128, 197, 256])
def test_softmax_computes_each_exp_once_into_its_output(width):
    """The exp of a softmax row, read by the sum and by the normalization, is its own stage (computed
    once, not inlined into both readers), whose buffer is no allocation of its own but the output
    (matched onto it: the normalization divides in place, as ONNX Runtime does); the values equal
    numpy (also over ragged rows: :func:`test_ragged_rows_of_row_reductions`)."""
    from edgecompile.lower.schedules.cpu_row_reduction import RowReduction

    func, _ = _row_kernel("softmax", 12, width)
    target = tvm.target.Target(TARGETS["avx512"])
    scheduled = RowReduction().apply(func, target, False).mod["main"]
    script = scheduled.script()
    exp_blocks = [line for line in script.splitlines() if "sblock(" in line and "exp" in line and "sum" not in line]
    assert exp_blocks, "the exp was inlined into its readers"
    assert "T.match_buffer(T_softmax_norm" in script and "exp_poly = T.sblock_alloc_buffer" not in script
    if "avx512f" in open("/proc/cpuinfo").read():  # run it where the host can
        lib = tvm.compile(tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}), target=target)
        x = np.random.default_rng(width).normal(0, 3, (12, width)).astype("float32")
        out = tvm.runtime.tensor(np.zeros_like(x))
        lib["main"](tvm.runtime.tensor(x), out)
        ref = np.exp(x - x.max(-1, keepdims=True))
        np.testing.assert_allclose(out.numpy(), ref / ref.sum(-1, keepdims=True), rtol=1e-5, atol=2e-6)


def test_a_requantized_softmax_keeps_its_exp_in_a_stack_row():
    """A softmax requantized to int8 in the same kernel (the int8 recipe's attention) cannot divide
    its exp in place (the output is int8): the exp still runs once, into a row buffer on the stack
    (128 keys: 512 bytes), and the kernel equals numpy's round-to-nearest quantization."""
    from tvm import relax

    from edgecompile.lower.schedules.cpu_row_reduction import RowReduction
    from edgecompile.passes.poly_exp import PolynomialExp

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((12, 128), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            p = relax.op.multiply(relax.op.nn.softmax(x, axis=-1), relax.const(np.float32(127.0)))
            q = relax.op.astype(relax.op.clip(relax.op.round(p), 0, 127), "int8")
            out = bb.emit_output(q)
        bb.emit_func_output(out)
    seq = tvm.transform.Sequential(
        [PolynomialExp(), relax.transform.FastMathTransform(), relax.transform.LegalizeOps(),
         relax.transform.AnnotateTIROpPattern(),
         relax.transform.FuseOps(), relax.transform.FuseTIR()]
    )  # fmt: skip
    mod = seq(bb.get())
    func = next(f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc))
    target = tvm.target.Target(TARGETS["avx512"])
    scheduled = RowReduction().apply(func, target, False).mod["main"]
    script = scheduled.script()
    assert any("sblock(" in line and "exp" in line and "sum" not in line for line in script.splitlines())
    assert "T.match_buffer" not in script  # int8 out: no in-place division
    if "avx512f" in open("/proc/cpuinfo").read():
        lib = tvm.compile(tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}), target=target)
        xv = np.random.default_rng(5).normal(0, 3, (12, 128)).astype("float32")
        got = tvm.runtime.tensor(np.zeros((12, 128), np.int8))
        lib["main"](tvm.runtime.tensor(xv), got)
        e = np.exp(xv - xv.max(-1, keepdims=True))
        ref = np.clip(np.round(e / e.sum(-1, keepdims=True) * 127), 0, 127)
        assert np.abs(got.numpy().astype(int) - ref).max() <= 1  # a value at .5 may round either way


def test_rows_shorter_than_two_vectors_are_left_to_dlight():
    from edgecompile.lower.schedules.cpu_row_reduction import RowReduction

    func, _ = _row_kernel("softmax", 8, 20)
    assert RowReduction().apply(func, tvm.target.Target(TARGETS["avx512"]), False) is None
    assert RowReduction().apply(func, tvm.target.Target(TARGETS["avx2"]), False) is not None  # 20 >= 2 x 8


@pytest.mark.parametrize("columns", [306, 320])
def test_matrix_times_batched_matrix(columns):
    """``W[O, K] @ x[B, K, P]``: dlight's index map folds the batch into the GEMM's columns, which
    our rule's tiles cannot follow (its write-back once copied rows no tile had computed: off by
    40); the rule declines that nest and the result is numpy's either way."""
    from tvm import relax

    from edgecompile.lower.build import compile_module
    from edgecompile.targets import get_profile

    rng = np.random.default_rng(columns)
    w = rng.standard_normal((16, 72)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 72, columns), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(relax.const(w), x))
        bb.emit_func_output(out)
    vm = relax.VirtualMachine(compile_module(bb.get(), get_profile("native").resolved()), tvm.cpu())
    xv = rng.standard_normal((2, 72, columns)).astype("float32")
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(xv)).numpy(), w @ xv, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target_name", list(TARGETS))
def test_attention_heads_of_ragged_width_are_padded(target_name):
    """``[B, H, M, K] @ [B, H, K, N]`` with a head width no tile divides (MobileViT's 30): B is
    padded to whole tiles before the batch dims are fused, so the micro-kernel's loads and
    multiply-adds are unguarded (a guarded last vector ran lane by lane: 25 GOP/s), and the result
    is numpy's."""
    from tvm import relax

    from edgecompile.lower.build import compile_module
    from edgecompile.lower.schedules.cpu_matmul import Matmul
    from edgecompile.targets import get_profile

    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((2, 3, 20, 16), "float32"))
    b = relax.Var("b", relax.TensorType((2, 3, 16, 30), "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(a, b))
        bb.emit_func_output(out)
    func = next(f for _, f in relax.transform.LegalizeOps()(bb.get()).functions_items() if isinstance(f, tirx.PrimFunc))
    script = Matmul().apply(func, tvm.target.Target(TARGETS[target_name]), False).mod.script()
    update = script.split('sblock("matmul_update")')[1].split("sblock(")[0]
    assert 'sblock("b_pad")' in script and "T.where" not in update
    if target_name == "avx512":  # the numbers, on this host's own target
        rng = np.random.default_rng(30)
        av = rng.standard_normal((2, 3, 20, 16)).astype("float32")
        bv = rng.standard_normal((2, 3, 16, 30)).astype("float32")
        vm = relax.VirtualMachine(compile_module(bb.get(), get_profile("native").resolved()), tvm.cpu())
        got = vm["main"](tvm.runtime.tensor(av), tvm.runtime.tensor(bv)).numpy()
        np.testing.assert_allclose(got, av @ bv, rtol=1e-4, atol=1e-4)


def test_row_rule_declines_a_gemm():
    """A GEMM with an epilogue is a reduction with one inner axis too, but a dot product of two
    operands, not a row's values: the row rule leaves it (it ran MobileViT's GEMMs at 6 GOP/s)."""
    from tvm import relax

    from edgecompile.lower.schedules.cpu_row_reduction import RowReduction

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 64, 96), "float32"))
    w = relax.Var("w", relax.TensorType((96, 240), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.add(relax.op.matmul(x, w), relax.const(1.0, "float32")))
        bb.emit_func_output(out)
    mod = relax.transform.FuseTIR()(relax.transform.FuseOps()(relax.transform.AnnotateTIROpPattern()(
        relax.transform.LegalizeOps()(bb.get()))))  # fmt: skip
    funcs = [f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]
    assert len(funcs) == 1 and len(funcs[0].script().split('T.sblock("')) > 2  # the GEMM and its epilogue
    assert RowReduction().apply(funcs[0], tvm.target.Target(TARGETS["avx512"]), False) is None
    softmax, _ = _row_kernel("softmax", 4, 240)
    assert RowReduction().apply(softmax, tvm.target.Target(TARGETS["avx512"]), False) is not None


def _native_run(body, x: np.ndarray):
    """Compile ``body(x_var)`` for this machine and run it on ``x``."""
    from tvm import relax

    from edgecompile.lower.build import compile_module
    from edgecompile.targets import get_profile

    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, str(x.dtype)))
    with bb.function("main", [xv]):
        with bb.dataflow():
            out = bb.emit_output(body(xv))
        bb.emit_func_output(out)
    built = compile_module(bb.get(), get_profile("native").resolved())
    return relax.VirtualMachine(built, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def test_bare_row_max_is_a_row_reduction():
    """max |x| over each row (the scale of a dynamic int8 row) is no GEMM: the matmul rule declines
    it (it took it, then the fallback did: 95 us for MiniLM's 128x1536), the row rule schedules it."""
    from tvm import relax

    from edgecompile.lower.schedules.cpu_matmul import Matmul
    from edgecompile.lower.schedules.cpu_row_reduction import RowReduction

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 128, 1536), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.max(relax.op.abs(x), axis=[-1], keepdims=True))
        bb.emit_func_output(out)
    mod = relax.transform.FuseTIR()(relax.transform.FuseOps()(relax.transform.AnnotateTIROpPattern()(
        relax.transform.LegalizeOps()(bb.get()))))  # fmt: skip
    func = next(f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc))
    target = tvm.target.Target(TARGETS["avx2"])
    assert Matmul().apply(func, target, False) is None
    assert RowReduction().apply(func, target, False) is not None
    xv = np.random.default_rng(0).normal(size=(1, 128, 1536)).astype("float32")
    got = _native_run(lambda v: relax.op.max(relax.op.abs(v), axis=[-1], keepdims=True), xv)
    np.testing.assert_array_equal(got, np.abs(xv).max(-1, keepdims=True))


@pytest.mark.parametrize("dtype,shape", [("int32", (12, 128, 128)), ("float32", (1, 128, 1536))])
def test_a_lone_row_max_is_a_row_reduction(dtype, shape):
    """A row max that fusion leaves alone in its kernel (the integer softmax's ``max`` of the
    logits, 6-12 calls per MiniLM run on the fallback schedule) is the row rule's, and exact."""
    from tvm import relax

    from edgecompile.lower.schedules.cpu_row_reduction import RowReduction

    def row_max(v):
        return relax.op.max(v, axis=[-1], keepdims=True)

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(row_max(x))
        bb.emit_func_output(out)
    mod = relax.transform.FuseTIR()(relax.transform.FuseOps()(relax.transform.AnnotateTIROpPattern()(
        relax.transform.LegalizeOps()(bb.get()))))  # fmt: skip
    func = next(f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc))
    assert RowReduction().apply(func, tvm.target.Target(TARGETS["avx2"]), False) is not None
    rng = np.random.default_rng(0)
    xv = (rng.integers(-(2**30), 2**30, shape) if dtype == "int32" else rng.normal(size=shape)).astype(dtype)
    np.testing.assert_array_equal(_native_run(row_max, xv), xv.max(-1, keepdims=True))


def test_kernels_without_blocks_build():
    """TOPI's cumsum (MPNet's position ids) is a plain loop nest with no block to schedule: the
    rules leave it as it is (the int8 rule once raised on it and failed the whole build)."""
    from tvm import relax

    xv = np.random.default_rng(1).integers(0, 3, (1, 128)).astype("int64")
    got = _native_run(lambda v: relax.op.cumsum(v, axis=1), xv)
    np.testing.assert_array_equal(got, np.cumsum(xv, axis=1))


@pytest.mark.parametrize("shape", [(1, 6, 257, 64), (2, 3, 49, 24)], ids=["dinov2-v", "ragged-columns"])
def test_a_column_max_is_vectorized_across_columns(shape):
    """A dynamic ``P V``'s scale per column of ``V``: max ``|V|`` over the keys (axis -2). dlight's
    rules decline it; ours runs the keys outside the columns (each step one contiguous row, which
    LLVM vectorizes) and computes what the unscheduled loop nest computes."""
    from tvm import relax

    from edgecompile.lower.schedules.cpu_column_reduction import ColumnReduction

    target = tvm.target.Target(TARGETS["avx2"])
    if "avx2" not in open("/proc/cpuinfo").read():
        pytest.skip("this machine cannot run AVX2 code")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.max(relax.op.abs(x), axis=[-2], keepdims=True))
        bb.emit_func_output(out)
    mod = _legalized(bb.get(), target)
    (func,) = [f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)]
    sch = ColumnReduction().apply(func, target, False)
    assert sch is not None
    out = sch.get_child_blocks(sch.get_sblock("root"))[-1]
    assert int(sch.get(sch.get_loops(out)[-1]).extent) == shape[-1]  # columns innermost
    args = [np.random.default_rng(1).uniform(-3, 3, shape).astype(np.float32),
            np.zeros((*shape[:-2], 1, shape[-1]), np.float32)]  # fmt: skip
    ref = _run(func, target, [a.copy() for a in args])
    got = _run(sch.mod["main"], target, [a.copy() for a in args])
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[1][..., 0, :], np.abs(args[0]).max(axis=-2))


def _one_kernel(build, args: list[tuple]) -> tirx.PrimFunc:
    from tvm import relax

    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(shape, dtype)) for i, (shape, dtype) in enumerate(args)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(build(*params))
        bb.emit_func_output(out)
    mod = relax.transform.FuseTIR()(relax.transform.FuseOps()(relax.transform.AnnotateTIROpPattern()(
        relax.transform.LegalizeOps()(bb.get()))))  # fmt: skip
    (func,) = [f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)]
    return func


def test_the_keys_a_query_reads_are_column_reductions():
    """A dynamic ``P V`` reads V's scale over the keys some query reads: the flag is a max of the int16
    probabilities over the queries (axis -2 of ``[H, S, S]``), the scale a max of ``|V|`` over the
    flagged keys. Both reduce over an outer axis: the row rule took the first (512 us per call at 256
    tokens, reading a column at a stride of a row), the fallback the second. Now the column rule takes
    both, and both equal numpy."""
    from tvm import relax

    from edgecompile.lower.schedules.cpu_column_reduction import ColumnReduction
    from edgecompile.lower.schedules.cpu_row_reduction import RowReduction

    target = tvm.target.Target(TARGETS["avx2"])
    if "avx2" not in open("/proc/cpuinfo").read():
        pytest.skip("this machine cannot run AVX2 code")
    h, s, d = 3, 40, 32
    rng = np.random.default_rng(2)
    p = rng.integers(0, 2**15, (1, h, s, s)).astype(np.int16)
    p[..., 33:] = 0  # keys no query reads
    v = rng.uniform(-3, 3, (1, h, s, d)).astype(np.float32)
    v[:, :, 33:] = 100.0  # ... with values that would widen the scale

    def flag(x):
        return relax.op.max(x, axis=[-2])

    def scale(flags, x):
        used = relax.op.expand_dims(relax.op.greater(flags, relax.const(0, "int16")), -1)
        magnitude = relax.op.where(used, relax.op.abs(x), relax.const(0.0, "float32"))
        return relax.op.max(magnitude, axis=[-2], keepdims=True)

    flags = p.max(axis=-2)
    cases = [
        (flag, [((1, h, s, s), "int16")], [p, np.zeros((1, h, s), np.int16)], flags),
        (scale, [((1, h, s), "int16"), ((1, h, s, d), "float32")], [flags, v, np.zeros((1, h, 1, d), np.float32)],
         np.where(flags[..., None] > 0, np.abs(v), 0).max(axis=-2, keepdims=True)),
    ]  # fmt: skip
    for build, sig, args, want in cases:
        func = _one_kernel(build, sig)
        assert RowReduction().apply(func, target, False) is None
        sch = ColumnReduction().apply(func, target, False)
        assert sch is not None
        # fusion may pass the 0.0 of the where as a scalar parameter: zeros for those
        if len(func.params) > len(args):
            args = [*args[:-1], np.zeros((), np.float32), args[-1]]
        got = _run(sch.mod["main"], target, [a.copy() for a in args])
        np.testing.assert_array_equal(got[-1], want)
    assert want.max() < 3  # the unread keys' 100s stayed out


def test_a_split_of_a_transpose_is_the_elementwise_rule():
    """A fused QKV projection's reshape, transpose and split (one kernel, three outputs: DINOv2's
    attention, 12 calls on the fallback schedule) is scheduled output by output, and exact."""
    from tvm import relax

    from edgecompile.lower.schedules.cpu_elementwise import Elementwise

    def qkv(v):
        heads = relax.op.permute_dims(relax.op.reshape(v, (257, 3, 6, 64)), [1, 2, 0, 3])
        return relax.op.split(heads, 3, axis=0)

    func = _one_kernel(qkv, [((257, 1152), "float32")])
    target = tvm.target.Target(TARGETS["avx2"])
    sch = Elementwise().apply(func, target, False)
    assert sch is not None
    from edgecompile.lower.tir_walk import statements

    loops = [s for s in statements(sch.mod["main"]) if isinstance(s, tirx.For)]
    assert sum(loop.kind == tirx.ForKind.VECTORIZED for loop in loops) == 3, sch.mod
    xv = np.random.default_rng(0).normal(size=(257, 1152)).astype("float32")
    ref = xv.reshape(257, 3, 6, 64).transpose(1, 2, 0, 3)
    args = [xv, *(np.zeros((1, 6, 257, 64), np.float32) for _ in range(3))]
    got = _run(sch.mod["main"], target, args)
    for i in range(3):
        np.testing.assert_array_equal(got[1 + i], ref[i : i + 1])
