"""The int8 recipe on real data: a ViT trained here on scikit-learn's digits keeps its accuracy,
and the CLI path (--calib, inspect --quant, calibration errors) works end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import edgecompile
from edgecompile.cli import app

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from helpers import digits_accuracy  # noqa: E402

runner = CliRunner()


_accuracy = digits_accuracy


def test_int8_keeps_digits_accuracy(digits):
    data, onnx_path, calib, tmp = digits
    fp32 = edgecompile.compile(onnx_path, output=tmp / "fp32")
    r = runner.invoke(
        app, ["compile", str(onnx_path), "--recipe", "int8", "--calib", str(calib), "-o", str(tmp / "int8")]
    )
    assert r.exit_code == 0, r.output
    acc_fp32, acc_int8 = _accuracy(fp32, data), _accuracy(tmp / "int8", data)
    # fp32 reaches ~96% on the 600 held-out digits; int8 measured 96.0 vs 96.2 (default observer)
    assert acc_fp32 > 93.0
    assert acc_int8 >= acc_fp32 - 0.5, (acc_fp32, acc_int8)

    r = runner.invoke(app, ["inspect", str(tmp / "int8"), "--quant", "--json"])
    assert r.exit_code == 0, r.output
    q = json.loads(r.output)
    names = [row["name"] for row in q["layers"]]
    assert {"linear.0", "matmul.0"} <= set(names)
    sqnr = [row["sqnr_db"] for row in q["layers"] if row["quantized"]]
    assert sqnr == sorted(sqnr) and min(sqnr) > 10  # worst first; no layer is garbage
    assert q["samples"] == 128 and q["observer"] == "percentile"
    m = json.loads((tmp / "int8" / "manifest.json").read_text())
    assert m["recipe"]["spec"] == "int8"


def test_keep_float_leaves_named_layers_in_float(digits):
    data, onnx_path, calib, tmp = digits
    out = edgecompile.compile(
        onnx_path, output=tmp / "kept", recipe="int8:samples=32", calib=calib, keep_float=["matmul.*", "linear.0"]
    )
    q = json.loads((out / "manifest.json").read_text())["quantization"]
    state = {row["name"]: row["quantized"] for row in q["layers"]}
    assert state["linear.0"] is False and not any(v for k, v in state.items() if k.startswith("matmul."))
    assert state["linear.1"] is True
    assert _accuracy(out, data) > 93.0


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "needs calibration data"),
        (["--calib", "{tmp}/missing.npz"], "not found"),
        (["--calib", "{tmp}/wrong.npz"], "has shape"),
        (["--calib", "{calib}", "--recipe", "int8:samples=1000"], "asks for 1000 calibration samples"),
        (["--calib", "{calib}", "--recipe", "int8:observer=median"], "unknown observer"),
        (["--calib", "{calib}", "--recipe", "int8:a16=linear.99"], "names no layer"),
        (["--calib", "{calib}", "--recipe", "fp32"], "does not quantize"),
    ],
)
def test_calibration_errors_are_clear(digits, extra, message):
    data, onnx_path, calib, tmp = digits
    np.savez(tmp / "wrong.npz", pixel_values=np.zeros((4, 8, 8), np.float32))
    args = [a.format(tmp=tmp, calib=calib) for a in extra]
    if "--recipe" not in args:
        args += ["--recipe", "int8"]
    r = runner.invoke(app, ["compile", str(onnx_path), "-o", str(tmp / "err"), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_inspect_quant_on_a_float_artifact_is_an_error(digits):
    _data, onnx_path, _calib, tmp = digits
    out = edgecompile.compile(onnx_path, output=tmp / "plain")
    r = runner.invoke(app, ["inspect", str(out), "--quant"])
    assert r.exit_code == 2 and "not compiled with a quantizing recipe" in r.output


def test_every_kernel_of_the_int8_model_is_scheduled(digits):
    import tvm

    from edgecompile.frontend import import_model
    from edgecompile.lower.build import compile_module, make_target
    from edgecompile.lower.pipeline import fusion_passes, schedule_passes
    from edgecompile.quant.options import QuantOptions
    from edgecompile.quant.plan import quantize_model
    from edgecompile.targets import get_profile

    data, onnx_path, _calib, _tmp = digits
    host = get_profile("native").resolved()
    imported = import_model(onnx_path)
    samples = [{"pixel_values": x[None]} for x in data["x_calib"][:16]]
    res = quantize_model(imported.mod, samples, ["pixel_values"], QuantOptions(), lambda m: compile_module(m, host))
    assert res.layers[0]["name"] == "linear.0" and res.layers[0]["quantized"]  # the patch-embedding conv
    for name in ("x86_64-avx2", "x86_64-avx512", "android-arm64"):
        target = make_target(get_profile(name).resolved())
        with target:
            mod = tvm.transform.Sequential(fusion_passes(target) + schedule_passes(target))(res.mod)
        funcs = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
        left = [n for n, f in funcs.items() if not f.attrs.get("tirx.is_scheduled", False)]
        assert not left, f"{name}: unscheduled kernels {left}"
        assert sum("int8_gemm" in n for n in funcs) >= 5, f"{name}: linear layers not on the int8 kernel"


def test_accuracy_budget_from_the_command_line(digits):
    """``int8:max_drop=`` holds out the last quarter of --calib; the drop it records is the shipped
    artifact's own on those samples, and inspect --quant says so."""
    from edgecompile.quant.budget import cosine

    data, onnx_path, calib, tmp = digits
    out = tmp / "budget"
    r = runner.invoke(
        app,
        ["compile", str(onnx_path), "--recipe", "int8:max_drop=1%,samples=32", "--calib", str(calib), "-o", str(out)],
    )
    assert r.exit_code == 0, r.output
    q = json.loads((out / "manifest.json").read_text())["quantization"]
    b = q["budget"]
    assert q["samples"] == 24 and b["held_out"] == 8 and q["max_drop"] == 0.01
    held = data["x_calib"][24:32]
    fp32, m = edgecompile.load(edgecompile.compile(onnx_path, output=tmp / "fp32_ref")), edgecompile.load(out)
    cos = [
        cosine(m.run({"pixel_values": x[None]})["logits"], fp32.run({"pixel_values": x[None]})["logits"]) for x in held
    ]
    assert 1 - np.mean(cos) == pytest.approx(b["drop"], abs=2e-6) and b["drop"] <= 0.01
    r = runner.invoke(app, ["inspect", str(out), "--quant"])
    assert r.exit_code == 0 and f"accuracy budget: drop {b['drop']:.4g} within 0.01" in r.output, r.output
    r = runner.invoke(
        app,
        [
            "compile",
            str(onnx_path),
            "--recipe",
            "int8:max_drop=1%,samples=2",
            "--calib",
            str(calib),
            "-o",
            str(tmp / "x"),
        ],
    )
    assert r.exit_code == 2 and "needs at least 3 samples; the data holds 2" in r.output, r.output
