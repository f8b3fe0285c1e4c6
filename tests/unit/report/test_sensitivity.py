"""Per-layer sensitivity: the switched module quantizes exactly one layer (the same result as the
rewrite with every other layer kept in float), the keep-float fix search finds the smallest k,
and ``edgecompile report`` adds the fix row when a quantized recipe misses --max-drop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from tvm import relax
from typer.testing import CliRunner

import edgecompile
from edgecompile.api import host_build
from edgecompile.cli import app
from edgecompile.ir.switch import flags, switch_width
from edgecompile.quant.rewriter import Int8
from edgecompile.recipe import parse_recipe
from edgecompile.report.sensitivity import smallest_fix, with_kept_float


@pytest.fixture(scope="module")
def calibrated(digits):
    """The digits ViT compiled int8 with static scales (the forms of the integer inputs checked below;
    act=auto gives P V run-time scales here, read from float), with the calibration the compile used."""
    data, onnx_path, calib, tmp = digits
    got = []
    art = edgecompile.compile(
        onnx_path, "native", tmp / "sens-int8", recipe="int8:act=static", calib=calib, on_quantized=got.append
    )
    return data, art, got[0]


def _run(vm, xs, *extra):
    outs = []
    for x in xs:
        y = vm["main"](tvm.runtime.tensor(x[None]), *extra)
        outs.append((y if hasattr(y, "numpy") else y[0]).numpy())
    return np.concatenate(outs)


def test_switch_quantizes_exactly_one_layer(calibrated, digits):
    data, _art, quant = calibrated
    _, onnx_path, _, tmp = digits
    xs = data["x_test"][:20]
    mod, layers = quant.calibration.switched()
    names = [layer["name"] for layer in layers]
    assert {layer["kind"] for layer in layers} == {"linear", "matmul"}  # adds here are between float tensors
    build = host_build()
    vm = relax.VirtualMachine(build(mod), tvm.cpu())
    width = switch_width(mod)
    switch = lambda k: tvm.runtime.tensor(flags(width, [] if k < 0 else [k]))  # noqa: E731
    fp32 = edgecompile.compile(onnx_path, "native", tmp / "sens-fp32")
    m = edgecompile.load(fp32)
    float_out = np.concatenate([m.run({"pixel_values": x[None]})["logits"] for x in xs])
    np.testing.assert_allclose(_run(vm, xs, switch(-1)), float_out, rtol=1e-5, atol=1e-5)  # -1: the float model
    # the switch covers exactly the layers the recipe rewrites (no float-only residual adds)
    assert names == [r["name"] for r in quant.layers if r["quantized"]]
    # a layer alone == the int8 rewrite with every other layer kept in float, where the full rewrite
    # fed it floats: linear.8 (after a LayerNorm) and linear.0 (the patch embedding, its output
    # requantized for the layout ops that read it, in both)
    for name in ("linear.0", "linear.8"):
        alone = quant.calibration.rewrite(keep_float=[n for n in names if n != name])
        want = _run(relax.VirtualMachine(build(alone), tvm.cpu()), xs)
        got = _run(vm, xs, switch(names.index(name)))
        assert np.abs(want - float_out).max() > 1e-4, name  # it really is quantized
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
    # matmul.1 (P V) reads V as the full rewrite holds it: int8 at the fused QKV projection's
    # output scale (keep_float would quantize V at its own, finer calibrated range)
    forms = quant.calibration.record["forms"]["matmul.1"]
    ((held, form),) = forms.items()
    qkv = next(layer for layer in quant.calibration.layers if layer.name == "linear.1")
    assert form == Int8(None, quant.calibration.thresholds[qkv.output] / 127.0)
    assert form.scale > quant.calibration.thresholds[held] / 127.0
    effect = np.abs(_run(vm, xs, switch(names.index("matmul.1"))) - float_out).max()
    assert 1e-3 < effect < 0.5


def test_smallest_fix_doubles_then_bisects():
    drops = [9.0, 8.0, 7.5, 7.0, 5.0, 4.0, 3.5, 3.0, 2.0, 1.0, 0.5]  # drop with k layers kept float
    calls = []

    def drop_with(k):
        calls.append(k)
        return drops[k]

    k, tried = smallest_fix(drop_with, 3.2, 10)
    assert k == 7 and drops[k] <= 3.2 < drops[k - 1]
    assert [t[0] for t in tried] == sorted(set(calls)) and len(calls) == len(set(calls)) < 10  # not a linear scan
    assert dict(tried)[6] == 3.5  # its left neighbour was measured and missed
    assert smallest_fix(drop_with, 9.5, 10)[0] == 1
    none, tried = smallest_fix(drop_with, 0.1, 10)
    assert none is None and tried[-1] == [10, 0.5]


def test_with_kept_float_edits_only_the_quantizing_part():
    rec = parse_recipe(with_kept_float("lowrank:ratio=0.5+int8:observer=mse", ["linear.3", "matmul.*"]))
    assert rec.part("lowrank").options == {"ratio": "0.5"}
    assert rec.part("int8").options == {"observer": "mse", "keep_float": "linear.3;matmul.*"}
    again = parse_recipe(with_kept_float(str(rec), ["linear.3", "gelu.0"]))
    assert again.part("int8").options["keep_float"] == "linear.3;matmul.*;gelu.0"


def test_report_adds_the_keep_float_fix_when_a_recipe_misses_the_budget(digits, tmp_path):
    """mse against fp32 on the digits ViT: a first report gives int8's drop D; rerun with
    --max-drop D/2, int8 misses it, and the report adds int8 with its k most sensitive layers in
    float, for the smallest k that meets D/2 (k - 1 was measured and missed)."""
    data, onnx_path, calib, _ = digits
    eval_npz = tmp_path / "eval.npz"
    np.savez(eval_npz, pixel_values=data["x_test"][:100, None])
    args = ["report", str(onnx_path), "--eval", str(eval_npz), "--calib", str(calib), "--metric", "mse",
            "--recipes", "fp32,int8", "--runs", "3", "-o", str(tmp_path / "r")]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    first = json.loads((tmp_path / "r" / "report.json").read_text())
    int8 = first["rows"][1]
    sens = int8["sensitivity"]
    assert sens["samples"] == 32 and len(sens["layers"]) >= 10 and "fix" not in int8
    drops = [s["drop"] for s in sens["layers"]]
    assert drops == sorted(drops, reverse=True) and drops[0] > 0
    limit = float(f"{int8['drop'] / 2:.6g}")
    r = CliRunner().invoke(app, [*args, "--max-drop", f"{limit:.6g}"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    rows = rep["rows"]
    assert [x["latency_ms"] for x in rows[:2]] == [x["latency_ms"] for x in first["rows"]]  # reused
    fix = rows[1]["fix"]
    assert len(rows) == 3 and rows[2]["fix_of"] == "int8" and rows[2]["recipe"] == fix["recipe"]
    k = len(rows[2]["kept_float"])
    worst = [s["layer"] for s in sens["layers"] if s["drop"] > 0]
    assert rows[2]["kept_float"] == worst[:k]
    assert parse_recipe(rows[2]["recipe"]).part("int8").options["keep_float"] == ";".join(worst[:k])
    assert rows[2]["drop"] <= limit < rows[1]["drop"]
    tried = dict((t[0], t[1]) for t in fix["tried"])
    assert k == 1 or tried[k - 1] > limit  # the smallest k
    assert rows[2]["latency_ms"]["median"] > 0 and rows[2]["energy_uj"] > 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert f"fix: {fix['recipe']}" in md and "fix of int8" in md
    assert (tmp_path / "r" / "report.html").read_text().count('class="sensitivity"') == 1


def test_integer_only_layers_alone_see_their_real_inputs(digits):
    """Integer-only: P V reads the integer softmax's [0, 2^15 - 1] at 2^-15; held from float, P = 1.0
    must stay 2^15 - 1 (when P was 8-bit, 256 wrapped to -128 once and made one P V look 60x worse
    than the whole recipe). Each attention op alone moves the logits by the order of the full
    recipe, not a multiple of it: "less than the whole recipe" is no law (errors partly cancel; on an
    AVX-512 VNNI CPU softmax.0 alone gave 0.227 against the whole recipe's 0.204), so the bound is
    2x, far below the 60x of the wrap bug."""
    data, onnx_path, calib, tmp = digits
    got = []
    full = edgecompile.compile(onnx_path, "native", tmp / "sens-io", recipe="int8-integer-only", calib=calib,
                               on_quantized=got.append)  # fmt: skip
    mod, layers = got[0].calibration.switched()
    names = [layer["name"] for layer in layers]
    assert {"softmax", "gelu", "layernorm", "matmul", "linear"} <= {layer["kind"] for layer in layers}
    vm = relax.VirtualMachine(host_build()(mod), tvm.cpu())
    xs = data["x_test"][:20]
    width = switch_width(mod)
    float_out = _run(vm, xs, tvm.runtime.tensor(flags(width)))
    m = edgecompile.load(full)
    whole = np.abs(np.concatenate([m.run({"pixel_values": x[None]})["logits"] for x in xs]) - float_out).max()
    for name in ("matmul.1", "matmul.3", "softmax.0"):
        alone = np.abs(_run(vm, xs, tvm.runtime.tensor(flags(width, [names.index(name)]))) - float_out).max()
        assert 0 < alone < 2 * whole, (name, alone, whole)
