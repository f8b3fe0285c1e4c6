"""The accuracy budget of the int8 recipes, ``max_drop=``: held-out samples, the ladder static ->
dynamic -> float in sensitivity order, and the drop it records is the one the module really has."""

from __future__ import annotations

import numpy as np
import pytest
from test_dynamic import _build, _mlp, _outlier_mlp, _outlier_samples, _run
from tvm import relax

from edgecompile.errors import CalibrationError
from edgecompile.ir import interpret as reference
from edgecompile.quant.budget import cosine, held_out
from edgecompile.quant.options import QuantOptions
from edgecompile.quant.plan import quantize_model


@pytest.fixture(scope="module")
def outliers():
    rng = np.random.default_rng(1)
    return _outlier_mlp(rng), _outlier_samples(rng, 12)


def _budgeted(mod, samples, max_drop: str, act: str = "static"):
    cfg = QuantOptions.from_options({"observer": "minmax", "smooth": "0", "act": act, "max_drop": max_drop}, False)
    return quantize_model(mod, samples, ["x"], cfg, _build)


def _held_drop(mod, res, held) -> float:
    """1 - mean cosine of the compiled quantized module to the float model on ``held``."""
    return 1 - float(np.mean([cosine(_run(res.mod, s["x"]), reference.run(mod["main"], s)) for s in held]))


def test_pearson_is_the_cosine_of_centred_outputs():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0.2, 0.9, (1, 1, 8, 8))
    noisy = ref + rng.normal(0, 0.1, ref.shape)
    assert cosine(noisy, ref, centred=True) == pytest.approx(np.corrcoef(noisy.ravel(), ref.ravel())[0, 1], abs=1e-12)
    assert cosine(noisy, ref) > cosine(noisy, ref, centred=True) + 0.05  # the offset hides the noise from cosine
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0


def test_held_out_is_the_last_quarter_and_never_all():
    samples = [{"i": i} for i in range(12)]
    calib, held = held_out(samples)
    assert [s["i"] for s in held] == [9, 10, 11] and len(calib) == 9
    assert len(held_out(samples[:3])[1]) == 2  # at least two held out
    with pytest.raises(CalibrationError, match="needs at least 3 samples; the data holds 2"):
        held_out(samples[:2])


def test_a_budget_the_recipe_meets_changes_nothing(outliers):
    mod, samples = outliers
    res = _budgeted(mod, samples, "50%")
    b = res.budget
    assert b["plan"] == [] and len(b["tries"]) == 1 and b["drop"] == b["drop_before"] <= 0.5
    assert res.calibration.dynamic == frozenset() and res.kept_float == [] and res.samples == 9


def test_outlier_layers_go_dynamic_until_the_budget_holds(outliers):
    """Static scales on outlier tokens miss a tight budget; the most sensitive layers take run-time
    scales, and the compiled module's drop on the held-out samples is the recorded one, within it."""
    mod, samples = outliers
    static = _budgeted(mod, samples, "50%").budget["drop"]
    limit = static / 4
    res = _budgeted(mod, samples, f"{limit!r}")
    b = res.budget
    assert b["drop_before"] == static and b["drop"] <= limit < b["drop_before"]
    assert {r["mode"] for r in b["plan"]} == {"dynamic"} and res.kept_float == []
    assert res.calibration.dynamic == {r["layer"] for r in b["plan"]}
    drops = [r["drop_alone"] for r in b["plan"]]
    assert drops == sorted(drops, reverse=True) and drops[0] > 0  # most sensitive first
    got = _held_drop(mod, res, samples[9:])
    assert got == pytest.approx(b["drop"], abs=2e-6)
    manifest = res.to_json(QuantOptions(max_drop=limit))
    assert manifest["budget"] is b and manifest["dynamic"] == sorted(res.calibration.dynamic)


def test_a_budget_dynamic_scales_cannot_meet_keeps_layers_in_float(outliers):
    mod, samples = outliers
    res = _budgeted(mod, samples, "1e-7", act="dynamic")
    b = res.budget
    floats = [r["layer"] for r in b["plan"] if r["mode"] == "float"]
    assert floats and res.kept_float == floats and not set(floats) & res.calibration.dynamic
    assert b["drop"] <= 1e-7 and _held_drop(mod, res, samples[9:]) <= 1e-6
    rows = {r["name"]: r["quantized"] for r in res.layers}
    assert all(rows[n] is False for n in floats)  # the layer errors are of the chosen plan


def _wide_gelu_mlp(rng):
    """x -> linear -> GELU -> linear, one GELU input channel always near -40: I-ViT's ShiftGELU reads
    an int8 input whose step that channel sets (0.3: coarse for the rest), I-BERT's i-GELU a 16-bit one;
    GELU(-40) = 0, so the output's range, and its step, is the other channels'."""
    w1, w2 = rng.normal(0, 0.3, (32, 64)).astype(np.float32), rng.normal(0, 0.2, (64, 16)).astype(np.float32)
    b1 = np.zeros(64, np.float32)
    b1[0] = -40
    return _mlp(w1, b1, relax.op.nn.gelu, w2)


def test_integer_only_swaps_a_gelu_to_the_other_integer_form_before_float():
    """A budget I-ViT's GELU misses and I-BERT's meets: the GELU takes I-BERT's form, in integers,
    instead of going to float; the rewrite, the plan and the compiled module's drop agree."""
    rng = np.random.default_rng(2)
    mod = _wide_gelu_mlp(rng)
    samples = [{"x": rng.normal(size=(1, 24, 32)).astype(np.float32)} for _ in range(12)]
    budget = lambda drop, **kw: quantize_model(  # noqa: E731
        mod, samples, ["x"],
        QuantOptions.from_options(
            {"observer": "minmax", "smooth": "0", "act": "static", "max_drop": drop, "ops": "ivit", **kw}, True
        ),
        _build,
    )  # fmt: skip
    ivit, ibert = budget("50%").budget["drop"], budget("50%", gelu="ibert").budget["drop"]
    assert ibert < ivit / 4  # the premise: I-BERT's GELU is much closer here
    limit = (ivit * ibert) ** 0.5
    res = budget(f"{limit!r}")
    b = res.budget
    assert {"layer": "gelu.0", "mode": "ibert"}.items() <= next(r for r in b["plan"] if r["layer"] == "gelu.0").items()
    assert res.kept_float == [] and b["drop"] <= limit < b["drop_before"]
    assert {r["name"]: r.get("impl") for r in res.layers}["gelu.0"] == "ibert"
    held = samples[9:]  # the float reference compiled: the numpy interpreter has no GELU
    got = 1 - float(np.mean([cosine(_run(res.mod, s["x"]), _run(mod, s["x"])) for s in held]))
    assert got == pytest.approx(b["drop"], abs=2e-6)
