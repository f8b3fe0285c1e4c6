"""int8 post-training quantization: integer ops bit-exact against the numpy reference (compiled
and interpreted), dyadic requantization edge cases, observers, calibration data errors, and a
whole quantized model equal to its reference interpreter bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from edgecompile import intref
from edgecompile.calibrate.data import load_samples
from edgecompile.calibrate.observers import BINS, Observer
from edgecompile.errors import CalibrationError, RecipeError
from edgecompile.frontend.spec import TensorSpec
from edgecompile.ir import interpret as reference
from edgecompile.lower.build import compile_module
from edgecompile.quant.options import QuantOptions
from edgecompile.quant.plan import quantize_model
from edgecompile.quant.rewriter import requantize
from edgecompile.targets import get_profile

HOST = get_profile("native").resolved()


def _build(mod):
    return compile_module(mod, HOST)


def _compiled(func: relax.Function, *args):
    vm = relax.VirtualMachine(_build(tvm.IRModule({"main": func})), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(a) for a in args])
    return out.numpy() if hasattr(out, "numpy") else [o.numpy() for o in out]


def _func(params: dict[str, tuple[tuple[int, ...], str]], body):
    """A one-output Relax function; ``body(bb, *vars)`` emits the computation."""
    bb = relax.BlockBuilder()
    vs = [relax.Var(n, relax.TensorType(shape, dt)) for n, (shape, dt) in params.items()]
    with bb.function("main", vs):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *vs))
        bb.emit_func_output(out)
    return bb.get()["main"]


# -- dyadic requantization -----------------------------------------------------------------------


def test_dyadic_is_accurate_and_fits_int32():
    rng = np.random.default_rng(0)
    r = np.exp(rng.uniform(np.log(1e-9), np.log(0.99), 10000))
    b, c = intref.dyadic(r)
    assert b.max() < 2**31 and b.min() >= 2**30
    np.testing.assert_allclose(b / 2.0**c, r, rtol=2**-30)


def test_dyadic_mantissa_rounding_up_to_2_pow_31_is_renormalised():
    # the notes' pitfall: ratio just below a power of two rounds b up to exactly 2^31
    b, c = intref.dyadic(np.array([1 - 2.0**-40, 0.5 - 2.0**-42]))
    assert list(b) == [2**30, 2**30]
    assert list(c) == [30, 31]


def test_dyadic_rejects_ratios_beyond_the_shift_range():
    with pytest.raises(ValueError):
        intref.dyadic(2.0**31)
    b, _ = intref.dyadic(1e-30)  # below a 62-bit shift: the product is 0
    assert int(b) == 0


def test_requantize_matches_exact_rounding():
    rng = np.random.default_rng(1)
    acc = rng.integers(-(2**24), 2**24, 5000).astype(np.int32)
    ratio = 0.0123
    b, c = intref.dyadic(ratio)
    got = intref.requantize(acc, b, c).astype(np.int64)
    exact = np.clip(np.floor(acc.astype(np.float64) * ratio + 0.5), -128, 127)
    assert np.abs(got - exact).max() <= 1  # b/2^c differs from the ratio by < 2^-30 relative


# -- integer ops: compiled == numpy reference, bit for bit ----------------------------------------


def test_quantize_compiled_equals_reference_including_ties():
    s = 0.05
    rng = np.random.default_rng(2)
    x = rng.normal(0, 3, (4, 257)).astype(np.float32)
    x[0, :40] = (np.arange(40, dtype=np.float32) - 20 + 0.5) * np.float32(s)  # exact .5 ties
    inv = relax.const(np.float32(1.0 / np.float32(s)))

    def body(bb, v):
        q = relax.op.round(relax.op.multiply(v, inv))
        return relax.op.astype(relax.op.clip(q, -128, 127), "int8")

    f = _func({"x": (x.shape, "float32")}, body)
    ref = intref.quantize(x, s)
    np.testing.assert_array_equal(_compiled(f, x), ref)
    np.testing.assert_array_equal(reference.run(f, {"x": x}), ref)


@pytest.mark.parametrize("dyadic", [True, False], ids=["dyadic", "float"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_requantize_compiled_equals_reference(per_channel, dyadic):
    """The rewriter's requantize (integer-only: dyadic; int8: float32 multiply) equals its numpy
    reference bit for bit, extremes and exact .5 ties included."""
    rng = np.random.default_rng(3)
    n = 48
    acc = rng.integers(-(2**31), 2**31 - 1, (5, n), dtype=np.int64).astype(np.int32)
    acc[0, :4] = [2**31 - 1, -(2**31), 0, 1]
    acc[1] = rng.integers(-400, 400, n)  # in range, so rounding decides
    acc[2] = 2 * rng.integers(-100, 100, n) + 1  # odd: * 0.5 is a tie
    ratio = rng.uniform(1e-9, 1e-2, n) if per_channel else np.float64(3.7e-6)
    ratio = np.where(np.arange(n) % 3 == 0, 0.5, ratio) if per_channel else np.float64(0.5)
    f = _func({"acc": (acc.shape, "int32")}, lambda bb, v: requantize(v, ratio, dyadic))
    if dyadic:
        ref = intref.requantize(acc, *intref.dyadic(ratio))
    else:
        ref = intref.requantize_f32(acc, np.float32(ratio))
        half = np.broadcast_to(ratio == 0.5, (n,))
        assert (ref[2][half].astype(np.int64) % 2 == 0).all()  # the ties went to even
    np.testing.assert_array_equal(_compiled(f, acc), ref)
    np.testing.assert_array_equal(reference.run(f, {"acc": acc}), ref)


def test_float_requantize_is_within_one_step_of_exact_rounding():
    rng = np.random.default_rng(1)
    acc = rng.integers(-(2**26), 2**26, 5000).astype(np.int32)
    ratio = rng.uniform(1e-7, 1e-2, 5000)
    got = intref.requantize_f32(acc, np.float32(ratio)).astype(np.int64)
    exact = np.clip(np.floor(acc.astype(np.float64) * ratio + 0.5), -128, 127)
    assert np.abs(got - exact).max() <= 1
    assert np.mean(got == exact) > 0.99


def test_int_matmul_bias_relu_compiled_equals_reference():
    rng = np.random.default_rng(4)
    a = rng.integers(-128, 128, (3, 40, 96), dtype=np.int8)
    w = rng.integers(-127, 128, (96, 64), dtype=np.int8)
    bias = rng.integers(-(2**20), 2**20, 64).astype(np.int32)

    def body(bb, v):
        acc = relax.op.add(relax.op.matmul(v, relax.const(w, "int8"), out_dtype="int32"), relax.const(bias, "int32"))
        return relax.op.maximum(acc, relax.const(0, "int32"))

    f = _func({"a": (a.shape, "int8")}, body)
    ref = np.maximum(intref.int_matmul(a, w, bias), 0)
    np.testing.assert_array_equal(_compiled(f, a), ref)
    np.testing.assert_array_equal(reference.run(f, {"a": a}), ref)


def test_int_activation_matmul_compiled_equals_reference():
    rng = np.random.default_rng(5)
    q = rng.integers(-128, 128, (1, 4, 33, 16), dtype=np.int8)
    k = rng.integers(-128, 128, (1, 4, 16, 33), dtype=np.int8)
    f = _func(
        {"q": (q.shape, "int8"), "k": (k.shape, "int8")},
        lambda bb, a, b: relax.op.matmul(a, b, out_dtype="int32"),
    )
    np.testing.assert_array_equal(_compiled(f, q, k), intref.int_matmul(q, k))


# -- observers -----------------------------------------------------------------------------------


def test_observers_on_known_distributions():
    rng = np.random.default_rng(6)
    obs = {m: Observer(m, 99.9) for m in ("minmax", "percentile", "mse", "entropy")}
    seen = []
    for _ in range(5):  # streamed in batches
        d = rng.laplace(0, 1, 20000).astype(np.float32)
        seen.append(d)
        for o in obs.values():
            o.observe(d)
    t = {m: o.threshold() for m, o in obs.items()}
    x = np.abs(np.concatenate(seen))
    assert t["minmax"] == pytest.approx(float(x.max()))
    # 99.9th percentile of |Laplace(1)| is ln(1000) = 6.91; bins are max/2048 ~ 0.006 wide
    assert t["percentile"] == pytest.approx(np.log(1000), abs=0.1)
    # the MSE-optimal 8-bit clip of a Laplace(b) is ~9.89 b (Banner et al., ACIQ)
    assert t["mse"] == pytest.approx(9.89, abs=0.4)
    # KL clips too, but less than the MSE search at 8 bits
    assert t["mse"] <= t["entropy"] < t["minmax"]


def _mse(x, t):
    s = t / 127
    return float(np.mean((x - np.clip(np.rint(x / s), -127, 127) * s) ** 2))


@pytest.mark.parametrize("dist", ["laplace", "student_t3", "normal"])
def test_mse_observer_finds_the_brute_force_optimum(dist):
    rng = np.random.default_rng(9)
    x = {"laplace": rng.laplace, "student_t3": lambda *a: rng.standard_t(3, a[-1]), "normal": rng.normal}[dist](
        0, 1, 50000
    ).astype(np.float32)
    o = Observer("mse")
    o.observe(x)
    grid = np.linspace(0.05, 1.0, 200) * np.abs(x).max()
    best = min(_mse(x, t) for t in grid)
    assert _mse(x, o.threshold()) <= 1.05 * best
    assert _mse(x, o.threshold()) <= _mse(x, float(np.abs(x).max()))


def test_observer_histogram_grows_without_losing_counts():
    o = Observer("percentile", 50.0)
    o.observe(np.full(1000, 0.5, np.float32))
    o.observe(np.full(1000, 100.0, np.float32))  # range doubles many times
    assert o.hist.sum() == 2000 and o.hist.size == BINS
    assert o.range >= 100.0
    assert o.threshold() <= 1.0  # the median is still in the low mass


# -- calibration data ------------------------------------------------------------------------------

SPECS = [TensorSpec("x", (1, 8), "float32")]


def test_calibration_npz_directory_and_iterable(tmp_path):
    rng = np.random.default_rng(7)
    np.savez(tmp_path / "a.npz", x=rng.normal(size=(3, 1, 8)))
    np.savez(tmp_path / "b.npz", x=rng.normal(size=(2, 1, 8)))
    assert len(load_samples(tmp_path, SPECS)) == 5
    assert len(load_samples(tmp_path / "a.npz", SPECS)) == 3
    assert len(load_samples([{"x": np.zeros((1, 8))}] * 4, SPECS, 2)) == 2


@pytest.mark.parametrize(
    "data, count, message",
    [
        ({"y": np.zeros((2, 1, 8))}, None, "lacks input"),
        ({"x": np.zeros((2, 8))}, None, "has shape"),
        ({"x": np.zeros((2, 1, 8)), "z": np.zeros((2, 1))}, None, "unknown input"),
        ({"x": np.zeros((2, 1, 8))}, 5, "asks for 5 calibration samples"),
        (None, None, "needs calibration data"),
        ("/nonexistent/calib.npz", None, "not found"),
    ],
)
def test_calibration_errors(tmp_path, data, count, message):
    src = data
    if isinstance(data, dict):
        src = tmp_path / "c.npz"
        np.savez(src, **data)
    with pytest.raises(CalibrationError, match=message):
        load_samples(src, SPECS, count)


def test_malformed_calibration_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(CalibrationError, match="cannot read"):
        load_samples(bad, SPECS)


def test_recipe_option_errors():
    with pytest.raises(RecipeError, match="unknown observer"):
        QuantOptions.from_options({"observer": "median"}, False)
    with pytest.raises(RecipeError, match="percentile"):
        QuantOptions.from_options({"percentile": "20"}, False)


# -- a whole quantized model: compiled == reference interpreter, bit for bit ------------------------


def _mlp_module(rng):
    """x -> linear -> relu -> linear (+ the first linear's output) -> linear: integer throughout."""
    w1, w2, w3 = (rng.normal(0, 0.3, s).astype(np.float32) for s in [(32, 64), (64, 64), (64, 16)])
    b1, b2 = rng.normal(0, 0.1, 64).astype(np.float32), rng.normal(0, 0.1, 64).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 24, 32), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.add(relax.op.matmul(x, relax.const(w1)), relax.const(b1)))
            r = bb.emit(relax.op.nn.relu(h))
            g = bb.emit(relax.op.add(relax.op.matmul(r, relax.const(w2)), relax.const(b2)))
            s = bb.emit(relax.op.add(g, h))
            y = bb.emit(relax.op.reshape(s, (24, 64)))
            out = bb.emit_output(relax.op.matmul(y, relax.const(w3)))
        bb.emit_func_output(out)
    return bb.get()


def test_quantized_model_compiled_equals_reference_interpreter():
    rng = np.random.default_rng(8)
    mod = _mlp_module(rng)
    samples = [{"x": rng.normal(size=(1, 24, 32)).astype(np.float32)} for _ in range(8)]
    cfg = QuantOptions.from_options({"observer": "minmax", "act": "static"}, False)  # integer throughout
    res = quantize_model(mod, samples, ["x"], cfg, _build)
    kinds = {r["name"]: r["quantized"] for r in res.layers}
    assert kinds == {"linear.0": True, "linear.1": True, "add.0": True, "linear.2": True}
    text = res.mod["main"].script()
    assert text.count('out_dtype="int32"') == 3 and "relu" not in text  # relu became an int8 max
    ex = _build(res.mod)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    float_out = reference.run(mod["main"], samples[0])
    for i in range(4):
        x = rng.normal(size=(1, 24, 32)).astype(np.float32) * (1 + i)  # also beyond the calibrated range
        got = vm["main"](tvm.runtime.tensor(x)).numpy()
        np.testing.assert_array_equal(got, reference.run(res.mod["main"], {"x": x}))
    # and it still approximates the float model
    q0 = vm["main"](tvm.runtime.tensor(samples[0]["x"])).numpy()
    cos = float(np.sum(q0 * float_out) / np.linalg.norm(q0) / np.linalg.norm(float_out))
    assert cos > 0.995


def test_int8_compiles_a_torch_module_and_quantizes_embeddings(tmp_path):
    torch = pytest.importorskip("torch")
    import json

    from models import BertStyleEncoder

    import edgecompile

    model = BertStyleEncoder(1000, 64, 2, 4, 128, 64).eval()
    rng = np.random.default_rng(9)
    ids, mask = torch.randint(0, 1000, (1, 16)), torch.ones(1, 16, dtype=torch.int64)
    calib = [{"input_ids": rng.integers(0, 1000, (1, 16)), "attention_mask": np.ones((1, 16), np.int64)}] * 4
    art = edgecompile.compile(model, output=tmp_path / "q", recipe="int8", calib=calib, example_inputs=(ids, mask))
    out = edgecompile.load(art).run({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})["output_0"]
    ref = model(ids, mask)[0].detach().numpy()
    assert float(np.sum(out * ref) / np.linalg.norm(out) / np.linalg.norm(ref)) > 0.999
    layers = {r["name"]: r for r in json.loads((art / "manifest.json").read_text())["quantization"]["layers"]}
    assert layers["embedding.0"]["quantized"] and layers["linear.0"]["quantized"]


def test_int8_keeps_the_kernels_the_onnx_importer_emits(tmp_path):
    """TVM's ONNX importer writes ``Clip`` as ``call_tir`` of TIR kernels of its own (all-MiniLM's
    pooling clamps this way); calibration and the rewrite re-emit ``main`` and must keep them."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import edgecompile

    rng = np.random.default_rng(3)
    w1, w2 = rng.normal(0, 0.3, (16, 32)).astype(np.float32), rng.normal(0, 0.3, (32, 8)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Clip", ["h", "lo", "hi"], ["c"]),
            helper.make_node("MatMul", ["c", "w2"], ["y"]),
        ],
        "clip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"))]
        + [numpy_helper.from_array(np.float32(v), n) for v, n in ((-0.5, "lo"), (0.5, "hi"))],
    )
    path = tmp_path / "clip.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    calib = [{"x": rng.normal(size=(1, 4, 16)).astype(np.float32)} for _ in range(8)]
    art = edgecompile.compile(path, output=tmp_path / "q", recipe="int8", calib=calib)
    x = calib[0]["x"]
    ref = np.clip(x @ w1, -0.5, 0.5) @ w2
    got = edgecompile.load(art).run({"x": x})["y"]
    assert float(np.sum(got * ref) / np.linalg.norm(got) / np.linalg.norm(ref)) > 0.999


def test_smoothing_moves_an_outlier_channel_into_the_weights():
    """One input channel 40x the others: smooth=auto smooths it (SQNR up), smooth=0 does not."""
    from edgecompile.quant.smooth import smoothing_factors

    rng = np.random.default_rng(4)
    w = rng.normal(0, 0.2, (32, 16)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 64, 32), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(x, relax.const(w)))
        bb.emit_func_output(out)
    mod = bb.get()

    def sample():
        a = rng.normal(size=(1, 64, 32)).astype(np.float32)
        a[..., 5] *= 40.0
        return {"x": a}

    samples = [sample() for _ in range(16)]  # 1024 tokens
    sqnr = {}
    for smooth in ("0", "auto"):
        cfg = QuantOptions.from_options({"observer": "minmax", "smooth": smooth}, False)
        res = quantize_model(mod, samples, ["x"], cfg, _build)
        sqnr[smooth] = res.layers[0]["sqnr_db"]
        assert ("smoothing" in res.layers[0]) == (smooth == "auto")
    assert sqnr["auto"] > sqnr["0"] + 6, sqnr
    from edgecompile.calibrate.capture import ChannelStats

    flat = np.ones(32)
    layer = type("L", (), {"binding": type("B", (), {"value": relax.op.matmul(x, relax.const(w))})()})()
    assert smoothing_factors(ChannelStats(flat, flat * 1000, 1000), [layer], None) is None  # no outliers
    assert smoothing_factors(ChannelStats(flat, flat, 16), [layer], None) is None  # too few tokens
    with pytest.raises(RecipeError, match="smooth"):
        QuantOptions.from_options({"smooth": "2"}, False)


def _attention_module(rng, guard: bool):
    """q, k, v linears -> softmax(q k^T) [-> where(isnan(P), 0, P), as torch's SDPA export] -> P v."""
    ws = [relax.const(rng.normal(0, 0.3, (16, 16)).astype(np.float32)) for _ in range(3)]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 12, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            q, k, v = (bb.emit(relax.op.matmul(x, w)) for w in ws)
            p = bb.emit(relax.op.nn.softmax(relax.op.matmul(q, relax.op.permute_dims(k, [0, 2, 1])), axis=-1))
            if guard:
                p = bb.emit(relax.op.where(relax.op.isnan(p), relax.const(0.0, "float32"), p))
            out = bb.emit_output(relax.op.matmul(p, v))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("integer_only", [False, True], ids=["int8", "integer-only"])
def test_attention_probabilities_are_int16_at_2_to_the_minus_15(integer_only):
    """P in [0, 1] is held as int16 [0, 2^15 - 1] at 2^-15 and P V runs int16 x int16 -> int32:
    compiled == reference (:func:`_matches_reference`), and the exporters' NaN guard on an
    integer P costs no float kernel."""
    rng = np.random.default_rng(5)
    samples = [{"x": rng.normal(size=(1, 12, 16)).astype(np.float32)} for _ in range(8)]
    mod = _attention_module(rng, guard=True)
    cfg = QuantOptions.from_options({"observer": "minmax", "smooth": "0"}, integer_only=integer_only)
    res = quantize_model(mod, samples, ["x"], cfg, _build)
    text = res.mod["main"].script()
    assert '"int16"' in text and "_p" in text
    assert "R.isnan" not in text if integer_only else "R.isnan" in text
    _matches_reference(res.mod, samples[:3], integer_only)
    pv = [r for r in res.layers if r["name"] == "matmul.1"][0]
    assert pv["sqnr_db"] > 25, pv


def _matches_reference(mod, samples, integer_only: bool) -> None:
    """The compiled ``mod`` against the numpy reference: bit for bit in the integer-only recipe; in
    int8 P comes from a float softmax whose compiled exp may differ from numpy's by an ulp, which
    moves a probability one 2^-15 step and an output by ``2^-15 |V|`` (1.1e-4 seen here, |V| ~ 3.5),
    so within 5e-4 (a wrong scale or rounding would be off by far more)."""
    vm = relax.VirtualMachine(_build(mod), tvm.cpu())
    for s in samples:
        got, want = vm["main"](*(tvm.runtime.tensor(v) for v in s.values())).numpy(), reference.run(mod, s)
        if integer_only:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=5e-4)


def _sink_attention_module(rng, tokens: int):
    """softmax(s I) -> P (x W): attention given its logits ``s``, to set their shape exactly (through
    an identity linear layer, so the integer-only recipe has integer logits)."""
    w = relax.const(rng.normal(0, 0.3, (16, 16)).astype(np.float32))
    eye = relax.const(np.eye(tokens, dtype=np.float32))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, tokens, 16), "float32"))
    s = relax.Var("s", relax.TensorType((1, tokens, tokens), "float32"))
    with bb.function("main", [x, s]):
        with bb.dataflow():
            p = bb.emit(relax.op.nn.softmax(bb.emit(relax.op.matmul(s, eye)), axis=-1))
            out = bb.emit_output(relax.op.matmul(p, bb.emit(relax.op.matmul(x, w))))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("integer_only", [False, True], ids=["int8", "integer-only"])
def test_an_attention_sink_leaves_the_small_probabilities_their_resolution(integer_only):
    """Every query puts ~0.8 on one key whose value is 0 (an attention sink, as DINOv2's high-norm
    token draws) and spreads the rest, which carries the output, over 255 keys at ~0.0008 each.
    At 8 bits on [0, 1] (step 1/255) most of those rounded to 0: P V at 1.3-1.6 dB SQNR. At 2^-15
    int8 keeps 30 dB; integer-only 15 dB, where its int8 logits (step ~0.07) now limit it.
    Against the reference as above."""
    rng = np.random.default_rng(6)
    tokens = 256
    logits = lambda: rng.normal(0, 0.5, (1, tokens, tokens)) + 7.0 * (np.arange(tokens) == 0)  # noqa: E731
    samples = [{"x": rng.normal(size=(1, tokens, 16)).astype(np.float32), "s": logits().astype(np.float32)}
               for _ in range(4)]  # fmt: skip
    for s in samples:
        s["x"][0, 0] = 0
    cfg = QuantOptions.from_options({"observer": "minmax", "smooth": "0", "act": "static"}, integer_only=integer_only)
    res = quantize_model(_sink_attention_module(rng, tokens), samples, ["x", "s"], cfg, _build)
    pv = [r for r in res.layers if r["name"] == "matmul.0"][0]
    assert pv["sqnr_db"] > (10 if integer_only else 25), pv
    _matches_reference(res.mod, samples[:1], integer_only)
