"""int16 activations (``int8:a16=``): the int16 x int8 GEMM as two int8 GEMMs
(:mod:`edgecompile.intref.wide`), bit for bit against numpy, and what it buys over int8."""

from __future__ import annotations

import numpy as np
import pytest
from test_dynamic import _build, _mlp, _run, _sqnr
from tvm import relax

from edgecompile import intref
from edgecompile.errors import RecipeError
from edgecompile.ir import interpret as reference
from edgecompile.quant.options import QuantOptions
from edgecompile.quant.plan import quantize_model
from edgecompile.quant.rounding import round_nearest


def test_split_wide_covers_the_whole_range_exactly():
    z = np.arange(-intref.WIDE_MAX, intref.WIDE_MAX + 1)
    hi, lo = intref.split_wide(z)
    assert hi.dtype == lo.dtype == np.int8
    np.testing.assert_array_equal(hi.astype(np.int64) * 256 + lo, z)
    # one level further and the high byte no longer fits int8
    assert (intref.WIDE_MAX + 1 + 128) >> 8 == 128


def test_wide_rescale_is_exact_integer_arithmetic_without_overflow():
    """``(t b + 2^(c-1)) >> c`` against Python's unbounded integers, for ``t`` up to 2^35 (K = 8192
    at full range) and ratios from 2^-40 to 2^10, both signs; the 23-bit multiplier is within
    2^-22 of the ratio."""
    rng = np.random.default_rng(0)
    ratios = np.concatenate([2.0 ** rng.uniform(-40, 10, 200), -(2.0 ** rng.uniform(-20, 0, 20))])
    b, c = intref.dyadic_wide(ratios)
    assert np.all(np.abs(b) < 2**23) and np.all(np.abs(b) >= 2**22) and np.all((c >= 1) & (c <= 62))
    np.testing.assert_allclose(b / 2.0**c, ratios, rtol=2.0**-22)
    hi = rng.integers(-(2**27), 2**27, (5, ratios.size))  # 256 hi + lo up to 2^35
    lo = rng.integers(-(2**31), 2**31, (5, ratios.size))
    got = intref.wide_rescale(hi, lo, b, c)
    want = [
        [((int(h) * 256 + int(w)) * int(m) + (1 << (int(e) - 1))) >> int(e) for h, w, m, e in zip(hr, lr, b, c)]
        for hr, lr in zip(hi, lo)
    ]
    np.testing.assert_array_equal(got, np.array(want, np.int64))
    with pytest.raises(ValueError):
        intref.dyadic_wide(2.0**23)


def _channel_outlier_mlp(rng):
    """x[1, 24, 32] -> linear -> ReLU -> linear, and samples whose channels 3 and 17 are 80x the
    rest on every token (LLM.int8()'s outlier features): a row scale cannot help, 16 bits can."""
    w1, w2 = rng.normal(0, 0.2, (32, 64)).astype(np.float32), rng.normal(0, 0.2, (64, 16)).astype(np.float32)
    w1[[3, 17]] /= 80  # the outlier channels matter as much as the others to the output
    mod = _mlp(w1, rng.normal(0, 0.1, 64).astype(np.float32), relax.op.nn.relu, w2)

    def samples(n):
        out = []
        for _ in range(n):
            x = rng.normal(size=(1, 24, 32)).astype(np.float32)
            x[..., [3, 17]] *= 80
            out.append({"x": x})
        return out

    return mod, samples(8), samples(3)


def _quantized(mod, samples, options: dict, integer_only: bool):
    base = {"observer": "minmax", "smooth": "0", "rounding": "nearest", "bias_correction": "off"}
    return quantize_model(mod, samples, ["x"], QuantOptions.from_options({**base, **options}, integer_only), _build)


@pytest.mark.parametrize("integer_only", [False, True])
def test_a16_holds_outlier_channels_that_row_scales_cannot(integer_only):
    """On inputs whose outliers are channels (every row has them), run-time row scales gain a
    little (each row's max is below the calibrated one) and int16 activations on the first layer
    much more: over 12 dB on static, over 5 on dynamic; ``a16=auto`` picks that layer
    alone (its int8 input estimated below the floor), and the int16 layer's output in the
    integer-only recipe equals :mod:`edgecompile.intref.wide`'s arithmetic bit for bit."""
    rng = np.random.default_rng(3)
    mod, samples, held = _channel_outlier_mlp(rng)
    sq = {}
    cases = {"static": {"act": "static"}, "dynamic": {"act": "dynamic"}, "a16": {"act": "static", "a16": "linear.0"},
             "auto": {"act": "static", "a16": "auto"}}  # fmt: skip
    for name, options in cases.items():
        res = _quantized(mod, samples, options, integer_only)
        got = [_run(res.mod, s["x"]) for s in held]
        sq[name] = min(float(np.median(_sqnr(reference.run(mod["main"], s), g, axis=-1))) for s, g in zip(held, got))
        if name == "a16":
            acts = {r["name"]: r.get("act") for r in res.layers if r["kind"] == "linear"}
            assert acts == {"linear.0": "a16", "linear.1": "static"}, acts
            for s, g in zip(held, got):
                np.testing.assert_array_equal(g, reference.run(res.mod, s))
        if name == "auto":
            assert res.calibration.wide == {"linear.0"}, res.calibration.wide
    assert sq["a16"] > sq["static"] + 12 and sq["a16"] > sq["dynamic"] + 5, sq
    assert sq["auto"] == sq["a16"], sq


def test_integer_only_a16_linear_is_intref_arithmetic():
    """One linear layer, integer-only, ``a16``: the compiled int32 output equals the numpy
    composition of :func:`~edgecompile.intref.wide_quantize`, :func:`~edgecompile.intref.split_wide`,
    two int8 matmuls and :func:`~edgecompile.intref.wide_rescale` plus the bias, bit for bit."""
    rng = np.random.default_rng(4)
    w = rng.normal(0, 0.2, (48, 32)).astype(np.float32)
    bias = rng.normal(0, 0.1, 32).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 24, 48), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.add(relax.op.matmul(x, relax.const(w)), relax.const(bias)))
        bb.emit_func_output(out)
    samples = [{"x": (rng.normal(size=(1, 24, 48)) * rng.uniform(0.5, 30, 48)).astype(np.float32)} for _ in range(6)]
    res = _quantized(bb.get(), samples, {"a16": "linear.0"}, integer_only=True)
    (info,) = [r for r in res.layers if r["name"] == "linear.0"]
    assert info["act"] == "a16"
    sx, s_fine = info["scale_in"], info["scale_out"]
    wq, sw = round_nearest(w)
    b, c = intref.dyadic_wide(np.float64(sx) * sw / s_fine)
    for s in samples[:2]:
        hi, lo = intref.split_wide(intref.wide_quantize(s["x"], sx))
        y = intref.wide_rescale(intref.int_matmul(hi, wq), intref.int_matmul(lo, wq), b, c)
        y = np.clip(y + np.rint(bias / s_fine).astype(np.int64), -(2**31 - 1), 2**31 - 1)
        want = y.astype(np.float32) * np.float32(s_fine)
        np.testing.assert_array_equal(_run(res.mod, s["x"]), want)


def test_a16_options():
    assert QuantOptions.from_options({"a16": "linear.1;linear.3"}, False).a16 == ("linear.1", "linear.3")
    auto = QuantOptions.from_options({"a16": "auto"}, True)
    assert auto.a16_auto and auto.a16 == ()
    assert QuantOptions.from_options({}, False).a16 == () and not QuantOptions().a16_auto
    rng = np.random.default_rng(5)
    mod, samples, _ = _channel_outlier_mlp(rng)
    with pytest.raises(RecipeError, match="a16 'linear.9' names no layer"):
        _quantized(mod, samples, {"a16": "linear.9"}, False)


@pytest.mark.parametrize("integer_only", [False, True])
def test_budget_moves_a_layer_to_int16_before_float(integer_only):
    """``max_drop=1%`` on the outlier-channel model: run-time scales cannot meet it, int16 on the
    first linear layer alone does (the budget's third rung), and nothing goes to float."""
    mod, samples, _ = _channel_outlier_mlp(np.random.default_rng(3))
    more = _channel_outlier_mlp(np.random.default_rng(9))[1]
    res = _quantized(mod, samples + more, {"max_drop": "1%"}, integer_only)
    budget = res.budget
    assert budget["drop_before"] > 0.01 >= budget["drop"], budget
    assert [(r["layer"], r["mode"]) for r in budget["plan"]] == [("linear.0", "a16")], budget["plan"]
    assert not res.kept_float and res.calibration.wide == {"linear.0"}
    assert {r["name"]: r.get("act") for r in res.layers}["linear.0"] == "a16"
    manifest = res.to_json(QuantOptions())
    assert manifest["a16"] == ["linear.0"] and manifest["budget"]["tries"][-1]["a16_added"] == 1


@pytest.mark.parametrize("flavor", ["", "ibert,"])
def test_integer_only_a16_keeps_digits_accuracy_with_no_float_inside(digits, flavor):
    """The digits ViT with every linear layer on int16 activations: only the input quantize and
    the logits dequantize do float arithmetic (the int16 halves combine in int64; after I-BERT's
    GELU the input scale is negative), the manifest lists the layers, and accuracy holds."""
    import json

    from helpers import BOUNDARY_ROLES, digits_accuracy, float_ops
    from test_dynamic import edgecompile_compile
    from typer.testing import CliRunner

    from edgecompile.cli import app

    data, onnx_path, calib, tmp = digits
    art = edgecompile_compile(onnx_path, tmp / f"io-a16-{flavor.strip(',') or 'ivit'}",
                              f"int8-integer-only:{flavor}a16=linear.*", calib)  # fmt: skip
    assert {row["role"] for row in float_ops(art)} == BOUNDARY_ROLES
    q = json.loads((art / "manifest.json").read_text())["quantization"]
    wide = [row["name"] for row in q["layers"] if row.get("act") == "a16"]
    assert len(wide) >= 8 and all(n.startswith("linear.") for n in wide) and sorted(wide) == q["a16"]
    r = CliRunner().invoke(app, ["inspect", str(art), "--quant"])
    assert r.exit_code == 0 and "a16" in r.output, r.output
    assert digits_accuracy(art, data) >= 95.0  # measured 96.17 static
