"""Run-time (dynamic) activation scales, ``int8:act=``: the quantize step equals its numpy
reference bit for bit, the choice follows calibration, and outlier rows keep their neighbours'
resolution."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from test_quantize import _attention_module
from tvm import relax

from edgecompile import intref
from edgecompile.errors import RecipeError
from edgecompile.ir import interpret as reference
from edgecompile.lower.build import compile_module
from edgecompile.quant.options import QuantOptions
from edgecompile.quant.plan import quantize_model
from edgecompile.quant.rewriter import Float, Rewriter
from edgecompile.targets import get_profile

HOST = get_profile("native").resolved()


def _build(mod):
    return compile_module(mod, HOST)


def _run(mod, *args):
    vm = relax.VirtualMachine(_build(mod), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(a) for a in args])
    return out.numpy() if hasattr(out, "numpy") else [o.numpy() for o in out]


@pytest.mark.parametrize("axis", [-1, -2])
def test_dynamic_quantize_compiled_equals_reference(axis):
    """Rows (columns) of very different ranges, an all-zero one (padding), exact .5 ties: the
    compiled int8 values and scales equal :func:`edgecompile.intref.dynamic_quantize`."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 24, 40)).astype(np.float32)
    x[0, 3] *= 80  # an outlier token
    x[1, 5] = 0  # a padded token
    x[1, :, 7] = 0
    x[0, 9, :8] = np.float32(127 / 2) * (np.arange(8, dtype=np.float32) - 3.5) / 63.5  # .5 ties at scale 1/2
    x[0, 9, 8] = 127 / 2
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            rw = Rewriter(bb, {}, [], (), {})
            rw.env[xv] = Float(xv)
            q, s, _ = rw.as_dynamic(xv, axis)
            out = bb.emit_output(relax.Tuple([q, s]))
        bb.emit_func_output(out)
    got_q, got_s = _run(bb.get(), x)
    ref_q, ref_s = intref.dynamic_quantize(x, axis)
    np.testing.assert_array_equal(got_q, ref_q)
    np.testing.assert_array_equal(got_s, ref_s)
    assert np.abs(ref_q).max(axis=axis).max() == 127 and not ref_q[1, 5].any() if axis == -1 else True


def test_a_keys_scale_ignores_the_keys_no_query_reads():
    """V of a ``P V`` per column (over the keys): keys whose probability is 0 in every row (masked
    or padded) do not set the scale; compiled equals the reference bit for bit, and a huge
    value in an unused key leaves the others' levels."""
    rng = np.random.default_rng(1)
    v = rng.normal(size=(2, 24, 16)).astype(np.float32)
    v[:, 20:] *= 1000  # padded keys: large values no query reads
    p = rng.integers(0, 3000, size=(2, 10, 24)).astype(np.int16)
    p[:, :, 20:] = 0
    p[0, :, 4] = 0  # a key masked in every row of one batch
    bb = relax.BlockBuilder()
    vv = relax.Var("v", relax.TensorType(v.shape, "float32"))
    pv = relax.Var("p", relax.TensorType(p.shape, "int16"))
    with bb.function("main", [vv, pv]):
        with bb.dataflow():
            rw = Rewriter(bb, {}, [], (), {})
            rw.env[vv] = Float(vv)
            q, s, _ = rw.as_dynamic(vv, -2, weights=pv)
            out = bb.emit_output(relax.Tuple([q, s]))
        bb.emit_func_output(out)
    got_q, got_s = _run(bb.get(), v, p)
    used = (p.max(axis=-2) > 0)[..., None]
    ref_q, ref_s = intref.dynamic_quantize(v, -2, used)
    np.testing.assert_array_equal(got_q, ref_q)
    np.testing.assert_array_equal(got_s, ref_s)
    np.testing.assert_array_equal(ref_s, intref.dynamic_quantize(v[:, :20] * used[:, :20], -2)[1])


def _mlp(w1: np.ndarray, b1: np.ndarray, act, w2: np.ndarray):
    """x[1, 24, IN] -> linear (w1, b1) -> ``act`` -> linear (w2)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 24, w1.shape[0]), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.add(relax.op.matmul(x, relax.const(w1)), relax.const(b1)))
            g = bb.emit(act(h))
            out = bb.emit_output(relax.op.matmul(g, relax.const(w2)))
        bb.emit_func_output(out)
    return bb.get()


def _outlier_mlp(rng):
    """x -> linear -> ReLU -> linear: a float model whose input has outlier tokens."""
    w1, w2 = rng.normal(0, 0.2, (32, 64)).astype(np.float32), rng.normal(0, 0.2, (64, 16)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 64).astype(np.float32)
    return _mlp(w1, b1, relax.op.nn.relu, w2)


def _outlier_samples(rng, n):
    """Tokens of unit scale, and two (at random places) 60x larger: the DINOv2 high-norm tokens."""
    out = []
    for _ in range(n):
        x = rng.normal(size=(1, 24, 32)).astype(np.float32)
        x[0, rng.choice(24, 2, replace=False)] *= 60
        out.append({"x": x})
    return out


def _each_act(mod, samples, acts, integer_only: bool) -> dict:
    """``{act: QuantResult}`` of ``mod`` calibrated (minmax, no smoothing) with each ``act``."""
    out = {}
    for act in acts:
        cfg = QuantOptions.from_options({"observer": "minmax", "smooth": "0", "act": act}, integer_only)
        out[act] = quantize_model(mod, samples, ["x"], cfg, _build)
    return out


def _sqnr(ref, got, axis=None):
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    return 10 * np.log10(np.sum(ref**2, axis=axis) / np.sum((ref - got) ** 2, axis=axis))


def test_auto_gives_outlier_tokens_their_own_scale():
    """Static scales flatten the normal tokens to a few levels; ``act=auto`` measures the gain in
    calibration, makes both linears dynamic, and the typical (median) token's output error drops by
    more than 15 dB; the compiled model equals the reference interpreter of its module."""
    rng = np.random.default_rng(1)
    mod = _outlier_mlp(rng)
    samples, held = _outlier_samples(rng, 8), _outlier_samples(rng, 3)
    results = _each_act(mod, samples, ("static", "auto"), integer_only=False)
    auto = results["auto"]
    assert auto.calibration.dynamic == {"linear.0", "linear.1"}
    assert all(r["act"] == "dynamic" and r["dynamic_gain_db"] > 10 for r in auto.layers)
    assert results["static"].calibration.dynamic == frozenset()
    assert all(r["act"] == "static" for r in results["static"].layers)
    sqnr = {}
    for act, res in results.items():
        got = [_run(res.mod, s["x"]) for s in held]
        ref = [reference.run(mod["main"], s) for s in held]
        sqnr[act] = min(float(np.median(_sqnr(r, g, axis=-1))) for r, g in zip(ref, got))
    assert sqnr["auto"] > sqnr["static"] + 15, sqnr
    for s in held:  # compiled vs the module's reference interpreter (float dequantize: a few ulp)
        np.testing.assert_allclose(_run(auto.mod, s["x"]), reference.run(auto.mod, s), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("integer_only", [False, True], ids=["int8", "integer-only"])
def test_auto_on_even_tokens_follows_each_recipes_threshold(integer_only):
    """Without outlier rows the estimated gain is a few dB: under the integer-only recipes' 6 dB
    every layer stays static (and fused); over int8's 0 dB, exactly the layers with a positive
    estimate go dynamic (run-time scales cost int8 little: quant/act_choice.py)."""
    rng = np.random.default_rng(2)
    mod = _outlier_mlp(rng)
    samples = [{"x": rng.normal(size=(1, 24, 32)).astype(np.float32)} for _ in range(8)]
    res = quantize_model(mod, samples, ["x"], QuantOptions.from_options({"smooth": "0"}, integer_only), _build)
    gains = {r["name"]: r["dynamic_gain_db"] for r in res.layers if r["kind"] == "linear"}
    assert gains and all(g < 6 for g in gains.values()), gains
    want = set() if integer_only else {name for name, g in gains.items() if g > 0}
    assert integer_only or want, gains
    assert res.calibration.dynamic == want, gains


def test_auto_counts_the_error_of_what_the_percentile_clips():
    """A massive activation (one channel of one token, 60x) in half the samples: 4 of 6144 values,
    under the 0.1% the percentile observer cuts, so the static scale clips them to the normal
    range. By rounding alone run-time scales looked no better (the rare 60x rows dwarf the clip
    value) and linear.0 stayed static at 2 dB SQNR; counting the clipped values' error, auto makes
    the layer dynamic, and the outlier token's output error (the worst token's SQNR on held-out
    samples) is far better."""
    rng = np.random.default_rng(7)
    mod = _outlier_mlp(rng)

    def draw(n):
        out = [{"x": rng.normal(size=(1, 24, 32)).astype(np.float32)} for _ in range(n)]
        for s in out[::2]:
            s["x"][0, rng.integers(24), rng.integers(32)] = 60.0
        return out

    samples, held = draw(8), draw(4)
    results = {}
    for act in ("static", "auto"):
        cfg = QuantOptions.from_options({"percentile": "99.9", "smooth": "0", "act": act}, False)
        results[act] = quantize_model(mod, samples, ["x"], cfg, _build)
    first = [r for r in results["auto"].layers if r["name"] == "linear.0"][0]
    assert "linear.0" in results["auto"].calibration.dynamic and first["dynamic_gain_db"] > 6, first
    worst = {}
    for act, res in results.items():
        pairs = [(reference.run(mod["main"], s), _run(res.mod, s["x"])) for s in held[::2]]
        worst[act] = min(float(_sqnr(r, g, axis=-1).min()) for r, g in pairs)
    assert worst["auto"] > worst["static"] + 10, worst


def test_dynamic_layers_by_name_and_bad_options():
    rng = np.random.default_rng(3)
    mod = _outlier_mlp(rng)
    samples = [{"x": rng.normal(size=(1, 24, 32)).astype(np.float32)} for _ in range(4)]
    cfg = QuantOptions.from_options({"act": "static", "dynamic": "linear.1"}, False)
    assert quantize_model(mod, samples, ["x"], cfg, _build).calibration.dynamic == {"linear.1"}
    with pytest.raises(RecipeError, match="dynamic 'linear.9' names no layer"):
        quantize_model(mod, samples, ["x"], QuantOptions.from_options({"dynamic": "linear.9"}, False), _build)
    with pytest.raises(RecipeError, match="act must be one of auto, static, dynamic"):
        QuantOptions.from_options({"act": "sometimes"}, False)


def test_dynamic_attention_matmuls():
    """``act=dynamic``: Q K^T scaled per query row and per key, P V with P as int16 at its fixed
    2^-15 and V per channel; the integer path reads K through its transpose in float (no static requantize
    on the way), and the compiled model equals its reference interpreter."""
    rng = np.random.default_rng(4)
    mod = _attention_module(rng, guard=False)
    samples = [{"x": rng.normal(size=(1, 12, 16)).astype(np.float32)} for _ in range(6)]
    res = quantize_model(mod, samples, ["x"], QuantOptions.from_options({"act": "dynamic"}, False), _build)
    assert res.calibration.dynamic == {"linear.0", "linear.1", "linear.2", "matmul.0", "matmul.1"}
    text = res.mod["main"].script()
    assert text.count("= R.abs(") == 4 and '"int16"' in text  # x, q, k^T and v; P int16
    for s in samples[:3]:
        np.testing.assert_allclose(_run(res.mod, s["x"]), reference.run(res.mod, s), rtol=1e-5, atol=1e-6)
        assert _sqnr(reference.run(mod["main"], s), _run(res.mod, s["x"])) > 25


def test_per_layer_sensitivity_switches_a_dynamic_layer():
    """The one-build sensitivity module runs a dynamic layer alone exactly as the rewrite with every
    other layer kept in float does (its run-time scales from the float values it reads)."""
    from edgecompile.ir.switch import flags, switch_width

    rng = np.random.default_rng(5)
    mod = _outlier_mlp(rng)
    samples = _outlier_samples(rng, 6)
    res = quantize_model(mod, samples, ["x"], QuantOptions.from_options({"smooth": "0"}, False), _build)
    assert res.calibration.dynamic == {"linear.0", "linear.1"}
    smod, layers = res.calibration.switched()
    names = [layer["name"] for layer in layers]
    width = switch_width(smod)
    x = samples[0]["x"]
    for k, name in enumerate(names):
        want = _run(res.calibration.rewrite(keep_float=[n for n in names if n != name]), x)
        got = _run(smod, x, flags(width, [k]))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
        assert np.abs(want - reference.run(mod["main"], samples[0])).max() > 1e-4, name  # really quantized


def test_row_shift_quantize_compiled_equals_reference():
    """Integer-only run-time row scales: powers of two from each row's integer max, rows of int32
    values from 0 to near 2^31, an all-zero row; compiled == :func:`edgecompile.intref.row_shift_quantize`."""
    from edgecompile.quant.rewriter import Acc

    rng = np.random.default_rng(6)
    x = rng.integers(-300, 300, (3, 20, 48)).astype(np.int32)
    x[0, 1] = rng.integers(-(2**30), 2**30, 48)
    x[1, 2] = 0
    x[2, 3, :4] = [127, -127, 255, 2]  # the 127 / 128 boundary of a shift
    x[2, 4, :3] = [6, -2, 1]  # halves round up
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, "int32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            rw = Rewriter(bb, {}, [], (), {}, nonlinear={"softmax": "ivit"})
            rw.env[xv] = Acc(xv, 0.01, 0.1)
            q, shift, scale, sigma = rw.as_row_shifted(xv)
            out = bb.emit_output(relax.Tuple([q, shift]))
        bb.emit_func_output(out)
    got_q, got_shift = _run(bb.get(), x)
    ref_q, ref_shift = intref.row_shift_quantize(x.astype(np.int64))
    np.testing.assert_array_equal(got_q, ref_q)
    np.testing.assert_array_equal(got_shift, ref_shift)
    assert scale == 0.01 and sigma is None and ref_shift[0, 1, 0] >= 22 and ref_shift[1, 2, 0] == 0


def test_integer_only_row_shifted_linear():
    """``int8-integer-only:act=dynamic``: both linear layers take power-of-two row scales (the first
    from the input quantized at a fine step, the second from the integer ReLU output), the compiled
    model equals its reference interpreter bit for bit, and the typical token gains over static."""
    rng = np.random.default_rng(7)
    mod = _outlier_mlp(rng)
    samples, held = _outlier_samples(rng, 8), _outlier_samples(rng, 3)
    results = _each_act(mod, samples, ("static", "dynamic"), integer_only=True)
    res = results["dynamic"]
    acts = {r["name"]: r.get("act") for r in res.layers if r["kind"] == "linear"}
    assert acts == {"linear.0": "dynamic", "linear.1": "dynamic"}, acts
    assert "_shift" in res.mod["main"].script()
    sqnr = {}
    for act, r in results.items():
        got = [_run(r.mod, s["x"]) for s in held]
        sqnr[act] = min(float(np.median(_sqnr(reference.run(mod["main"], s), g, axis=-1))) for s, g in zip(held, got))
        for s, g in zip(held, got):
            np.testing.assert_array_equal(g, reference.run(r.mod, s))
    assert sqnr["dynamic"] > sqnr["static"] + 15, sqnr
    # auto picks by calibration in the integer-only recipe too (act_choice's docstring): the
    # outlier rows' layers, as act=dynamic does, and no other kind
    auto = quantize_model(mod, samples, ["x"], QuantOptions.from_options({"smooth": "0"}, True), _build)
    assert auto.calibration.dynamic == {"linear.0", "linear.1"}, auto.calibration.dynamic


@pytest.mark.parametrize("flavor", ["", "ibert,"])
def test_integer_only_dynamic_keeps_digits_accuracy_with_no_float_inside(digits, flavor):
    """The digits ViT with every linear row-shifted: still only the input quantize and the logits
    dequantize do float arithmetic, and accuracy holds. I-BERT's GELU output has a negative scale
    (erf's polynomial ``a < 0``): the FC2 after it rescales with a negated multiplier."""
    import json

    from helpers import BOUNDARY_ROLES, digits_accuracy, float_ops

    data, onnx_path, calib, tmp = digits
    out = tmp / f"io-dynamic-{flavor.strip(',') or 'ivit'}"
    art = edgecompile_compile(onnx_path, out, f"int8-integer-only:{flavor}act=dynamic", calib)
    assert {row["role"] for row in float_ops(art)} == BOUNDARY_ROLES
    q = json.loads((art / "manifest.json").read_text())["quantization"]
    dyn = [row["name"] for row in q["layers"] if row.get("act") == "dynamic"]
    assert len(dyn) >= 8 and all(n.startswith("linear.") for n in dyn) and sorted(dyn) == q["dynamic"]
    assert digits_accuracy(art, data) >= 95.0  # measured 96.17 static


def edgecompile_compile(onnx_path, out, recipe, calib):
    import edgecompile

    return edgecompile.compile(onnx_path, output=out, recipe=recipe, calib=calib)


def test_row_shifted_rescale_keeps_ratios_below_two_to_the_minus_32():
    """A row-shifted operand read at a very fine scale (I-BERT's GELU output after a row-shifted
    up-projection: ratios of 1e-11 on the real all-MiniLM-L6-v2) still rescales to
    ``acc * ratio * 2^shift``: plain :func:`edgecompile.intref.dyadic` zeroes ratios below 2^-32,
    which left 381 of 384 channels of a down-projection at its bias (cosine 0.717; now 0.995)."""
    rng = np.random.default_rng(3)
    ratio = np.exp(rng.uniform(np.log(1e-12), np.log(1e-3), 64))
    acc = rng.integers(-(2**31) + 1, 2**31 - 1, (16, 64), dtype=np.int64)
    shift = rng.integers(0, intref.SHIFT_STEPS + 1, (16, 1), dtype=np.int64)
    b, c = intref.dyadic_shifted(ratio)
    got = intref.rescale_shifted(acc, b, c, shift).astype(np.float64)
    want = acc * ratio * 2.0**shift
    # where rounding to an integer is a small part of the value, within the int32 the layer keeps
    big = (np.abs(want) >= 2**10) & (np.abs(want) < 2**31)
    assert big.sum() > 100
    np.testing.assert_allclose(got[big], want[big], rtol=2e-3)
    assert (intref.dyadic(ratio)[0] == 0).any()  # the plain form would have lost these
