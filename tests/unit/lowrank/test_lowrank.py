"""The low-rank recipe: the factorization math (whitening optimality, refit), rank selection under
each budget, the speed gate, composition with int8, and the CLI path on the digits ViT."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
from helpers import digits_accuracy
from typer.testing import CliRunner

import edgecompile
from edgecompile.cli import app
from edgecompile.lowrank.factorize import SecondMoment, breakeven_rank, refit_outer, spectrum

runner = CliRunner()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMPILE_CACHE", str(tmp_path / "cache"))


def _correlated(rng, tokens=4000, n=64, dims=8):
    """Inputs that live mostly in a few directions, as transformer features do."""
    basis = rng.standard_normal((dims, n))
    return rng.standard_normal((tokens, dims)) @ basis * 3 + 0.1 * rng.standard_normal((tokens, n))


def test_whitened_svd_is_optimal_for_the_output_and_its_spectrum_is_the_error():
    rng = np.random.default_rng(0)
    x, w = _correlated(rng), rng.standard_normal((64, 48))
    mom = SecondMoment()
    for chunk in np.split(x, 4):  # streamed, as calibration does
        mom.observe(chunk)
    whitened, plain = spectrum(w, mom.c), spectrum(w)
    y = x @ w
    for r in (4, 8, 16):
        errs = {}
        for name, spec in (("whitened", whitened), ("plain", plain)):
            p, q = spec.factors(r)
            errs[name] = np.linalg.norm(y - x @ p @ q) / np.linalg.norm(y)
        assert errs["whitened"] < errs["plain"], (r, errs)
        assert errs["whitened"] == pytest.approx(whitened.error(r), rel=0.01)  # the spectrum predicts it (ridge aside)
    p, q = whitened.factors(48)
    np.testing.assert_allclose(x @ p @ q, y, rtol=1e-6, atol=1e-6)  # full rank reconstructs


def test_whitening_survives_a_singular_second_moment():
    rng = np.random.default_rng(1)
    x = np.zeros((100, 16))
    x[:, :3] = rng.standard_normal((100, 3))  # 13 dead input channels
    mom = SecondMoment()
    mom.observe(x)
    p, q = spectrum(rng.standard_normal((16, 8)), mom.c).factors(3)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(q))


def test_refit_is_the_least_squares_outer_factor():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 32))
    xn = x + 0.3 * rng.standard_normal((500, 32))  # inputs after an upstream factorization
    w, p = rng.standard_normal((32, 24)), rng.standard_normal((32, 6))
    q = refit_outer(p, w, xn.T @ xn, xn.T @ x)
    want, *_ = np.linalg.lstsq(xn @ p, x @ w, rcond=None)
    np.testing.assert_allclose(q, want, rtol=1e-5, atol=1e-6)


def _compile(digits, name, recipe, samples=32, **kw):
    data, onnx_path, _calib, tmp = digits
    calib = [{"pixel_values": x[None]} for x in data["x_calib"][:samples]]
    return edgecompile.compile(onnx_path, output=tmp / name, recipe=recipe, calib=calib, **kw)


def _lowrank(artifact) -> dict:
    return json.loads((artifact / "manifest.json").read_text())["lowrank"]


def test_ratio_budget_halves_ffn_parameters_and_keeps_accuracy(digits):
    data, onnx_path, calib, tmp = digits
    out = tmp / "lr-ratio"
    r = runner.invoke(
        app,
        [
            "compile",
            str(onnx_path),
            "--recipe",
            "lowrank:ratio=0.5,gate=off,multiple=8",
            "--calib",
            str(calib),
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    lr = _lowrank(out)
    assert lr["method"] == "whitened" and lr["refit"] and lr["samples"] == 128
    rows = lr["layers"]
    assert [row["role"] for row in rows] == ["ffn-up", "ffn-down"] * 2  # the ViT's two FFNs
    want = 8 * round(0.5 * breakeven_rank(64, 128) / 8)
    assert all(row["rank"] == want for row in rows)
    assert lr["params_after"] / lr["params_before"] == pytest.approx(want * 192 / 8192, rel=1e-6)
    # measured: 96.33 vs fp32 96.17 (whitened + refit, 128 calibration images)
    fp32 = tmp / "fp32-lr"
    if not fp32.exists():
        edgecompile.compile(onnx_path, output=fp32)
    assert digits_accuracy(out, data) >= digits_accuracy(fp32, data) - 1.0
    r = runner.invoke(app, ["inspect", str(out), "--lowrank"])
    assert r.exit_code == 0 and "ffn-up" in r.output and "parameters of these layers" in r.output


def test_whitened_beats_plain_svd_on_the_model_output(digits):
    from edgecompile.frontend import import_model
    from edgecompile.ir.stage import StageContext
    from edgecompile.lower.build import compile_module
    from edgecompile.lowrank.options import LowRankOptions
    from edgecompile.lowrank.plan import lowrank_model
    from edgecompile.targets import get_profile

    data, onnx_path, _calib, _tmp = digits
    host = get_profile("native").resolved()
    samples = [{"pixel_values": x[None]} for x in data["x_calib"][:64]]
    # at ratio 0.5 whitened measured 0.033 vs plain 0.063 relative logit error (0.375: 0.061 vs 0.10);
    # at 0.25 (rank 8 of 64) plain SVD measured better: the per-layer optimum is not the model's
    config = LowRankOptions.from_options({"ratio": "0.5", "gate": "off", "refit": "false", "multiple": "8"})
    results = {}
    for method, given in (("whitened", samples), ("svd", None)):
        build = partial(compile_module, profile=host)  # host and target: the dense layers are timed
        ctx = StageContext(["pixel_values"], given, host, host_build=build, target_build=build)
        res = lowrank_model(import_model(onnx_path).mod, ctx, config)
        assert res.method == method
        results[method] = res
    import tvm
    from tvm import relax

    def outputs(mod):
        vm = relax.VirtualMachine(compile_module(mod, host), tvm.cpu())
        return np.concatenate([vm["main"](tvm.runtime.tensor(x[None])).numpy() for x in data["x_test"][:100]])

    ref = outputs(import_model(onnx_path).mod)
    err = {k: np.linalg.norm(outputs(r.mod) - ref) / np.linalg.norm(ref) for k, r in results.items()}
    assert err["whitened"] < err["svd"], err  # held-out images, model output (logits)
    assert results["whitened"].model_error["relative_l2"] < 0.1


def test_whitened_beats_plain_svd_on_the_example_encoder():
    """The bundled BERT-style example (every linear layer, masked attention, its own calibration
    samples), output error on its held-out inputs."""
    import tvm
    from helpers import EXAMPLE_INPUTS, EXAMPLE_ONNX
    from tvm import relax

    from edgecompile.calibrate.data import load_samples
    from edgecompile.frontend import import_model
    from edgecompile.ir.stage import StageContext
    from edgecompile.lower.build import compile_module
    from edgecompile.lowrank.options import LowRankOptions
    from edgecompile.lowrank.plan import lowrank_model
    from edgecompile.targets import get_profile

    host = get_profile("native").resolved()
    imported = import_model(EXAMPLE_ONNX, {"input_ids": (1, 32), "attention_mask": (1, 32)})
    names = [s.name for s in imported.inputs]
    samples = load_samples(EXAMPLE_ONNX.parent / "tiny_bert_calib.npz", imported.inputs, 32)
    feeds = dict(np.load(EXAMPLE_INPUTS))
    config = LowRankOptions.from_options({"ratio": "0.5", "gate": "off", "layers": "all-linear", "multiple": "8"})

    def hidden(mod):
        vm = relax.VirtualMachine(compile_module(mod, host), tvm.cpu())
        return vm["main"](*[tvm.runtime.tensor(feeds[n]) for n in names])[0].numpy()

    ref = hidden(imported.mod)
    err = {}
    for method, given in (("whitened", samples), ("svd", None)):
        build = partial(compile_module, profile=host)  # host and target: the dense layers are timed
        ctx = StageContext(names, given, host, host_build=build, target_build=build)
        res = lowrank_model(imported.mod, ctx, config)
        err[method] = np.linalg.norm(hidden(res.mod) - ref) / np.linalg.norm(ref)
    assert err["whitened"] < err["svd"], err


def test_max_drop_budget_holds_on_held_out_digits(digits):
    data, onnx_path, *_, tmp = digits
    out = _compile(digits, "lr-drop", "lowrank:max_drop=1%,gate=off,multiple=4", samples=128)
    lr = _lowrank(out)
    assert lr["model_error"]["top1_changed"] <= 0.01 and lr["model_error"]["prob_shift"] <= 0.01
    assert any(row["rank"] for row in lr["layers"])  # the budget allows some factorization
    fp32 = tmp / "fp32-lr"
    if not fp32.exists():
        edgecompile.compile(onnx_path, output=fp32)
    assert digits_accuracy(out, data) >= digits_accuracy(fp32, data) - 1.0


def test_speed_gate_keeps_layers_that_would_not_be_faster(digits):
    lr = _lowrank(_compile(digits, "lr-gate", "lowrank:ratio=0.9,gate=estimate,multiple=8"))
    # at 0.9 r*, two GEMMs cost more than one (estimate: 1.25x per multiply-add): all kept dense
    assert all(row["rank"] is None and "no faster" in row["kept_dense"] for row in lr["layers"])
    assert lr["params_after"] == lr["params_before"]


def test_speedup_budget_reaches_its_estimated_target(digits):
    lr = _lowrank(_compile(digits, "lr-speed", "lowrank:speedup=1.5,gate=estimate,multiple=4"))
    dense = sum(row["dense_ms"] for row in lr["layers"])
    factored = sum(row["factored_ms"] if row["rank"] else row["dense_ms"] for row in lr["layers"])
    assert dense / factored >= 1.5


def test_lowrank_then_int8_composes(digits):
    data, onnx_path, calib, tmp = digits
    fp32 = tmp / "fp32-lr"
    if not fp32.exists():
        edgecompile.compile(onnx_path, output=fp32)
    out = _compile(digits, "lr-int8", "lowrank:ratio=0.5,gate=off,multiple=8,layers=all-linear+int8", samples=128)
    m = json.loads((out / "manifest.json").read_text())
    names = {row["name"] for row in m["quantization"]["layers"] if row["quantized"]}
    assert len([n for n in names if n.startswith("linear.")]) > 2 * len(m["lowrank"]["layers"]) - 2  # both factors
    # (the artifact of this tiny model is mostly code; sizes are compared on MiniLM in benchmarks/)
    assert m["lowrank"]["params_after"] < 0.75 * m["lowrank"]["params_before"]
    assert digits_accuracy(out, data) >= digits_accuracy(fp32, data) - 1.5


@pytest.mark.parametrize(
    "spec, message",
    [
        ("lowrank:ratio=0.5,rank=16", "give one budget"),
        ("lowrank:layers=attention", "layers must be ffn or all-linear"),
        ("lowrank:ratio=2", "out of range"),
        ("lowrank:gate=maybe", "gate must be"),
    ],
)
def test_bad_lowrank_options_are_clear_errors(digits, spec, message):
    _data, onnx_path, calib, tmp = digits
    r = runner.invoke(app, ["compile", str(onnx_path), "--recipe", spec, "--calib", str(calib), "-o", str(tmp / "e")])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output


def test_max_drop_without_calibration_data_is_a_clear_error(digits):
    _data, onnx_path, _calib, tmp = digits
    r = runner.invoke(app, ["compile", str(onnx_path), "--recipe", "lowrank:max_drop=1%", "-o", str(tmp / "e")])
    assert r.exit_code == 2 and "pass --calib" in r.output and "Traceback" not in r.output, r.output
