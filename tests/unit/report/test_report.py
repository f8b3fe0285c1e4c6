"""``edgecompile report`` on the digits ViT: every recipe compiled, evaluated and timed; the
report's JSON/Markdown/HTML; the recommendation under --max-drop holds on a split the report never
saw; rerunning reuses finished rows; bad input is a clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import ROOT, digits_accuracy
from typer.testing import CliRunner

from edgecompile.cli import app
from edgecompile.report.sweep import pareto, recommend

RECIPES = "fp32,int8,int8-integer-only"


@pytest.fixture(scope="module")
def report_run(digits):
    data, onnx_path, calib, tmp = digits
    eval_npz = tmp / "eval.npz"
    np.savez(eval_npz, pixel_values=data["x_test"][:300, None], labels=data["y_test"][:300])
    out = tmp / "report"
    args = ["report", str(onnx_path), "--eval", str(eval_npz), "--calib", str(calib), "--metric", "top1",
            "--recipes", RECIPES, "--max-drop", "1%", "--runs", "5", "-o", str(out)]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    return out, args, r.output


def test_report_measures_every_recipe_and_recommends_one(report_run):
    out, _args, printed = report_run
    rep = json.loads((out / "report.json").read_text())
    assert rep["version"] == 2 and rep["metric"] == "top1" and rep["eval"] == {**rep["eval"], "samples": 300}
    assert [r["recipe"] for r in rep["rows"]] == RECIPES.split(",")
    base = rep["rows"][0]
    assert base["drop"] == 0.0 and 90.0 < base["metric"] <= 100.0
    for r in rep["rows"]:
        lo, hi = r["drop_ci95"]
        assert lo <= r["drop"] <= hi and len(r["scores"]) == 300
        assert r["latency_ms"]["median"] > 0 and r["size_bytes"] > 0 and (out / r["artifact"]).is_dir()
        assert r["energy_uj"] > 0
        if r["recipe"] != "fp32":  # per-layer sensitivity of the quantized recipes, worst first
            layers = r["sensitivity"]["layers"]
            assert r["sensitivity"]["samples"] == 32 and len(layers) >= 10
            assert [x["drop"] for x in layers] == sorted((x["drop"] for x in layers), reverse=True)
    assert rep["timing"]["device"] == "local"
    assert rep["recommended"] in RECIPES.split(",") and rep["recommended"] in rep["pareto"]
    assert "fastest recipe" in rep["reason"]
    md = (out / "report.md").read_text()
    assert "| recipe |" in md and f"**Recommended:** {rep['recommended']}" in md and md.strip() in printed.strip()
    page = (out / "report.html").read_text()
    assert 'src="data:image/png;base64,' in page and page.count("<tr>") == 4


def test_recommendation_holds_on_a_split_the_report_never_saw(report_run, digits):
    data, *_ = digits
    out, *_ = report_run
    rep = json.loads((out / "report.json").read_text())
    held_out = {"x_test": data["x_test"][300:], "y_test": data["y_test"][300:]}
    rows = {r["recipe"]: r for r in rep["rows"]}
    fp32 = digits_accuracy(out / rows["fp32"]["artifact"], held_out)
    chosen = digits_accuracy(out / rows[rep["recommended"]]["artifact"], held_out)
    assert chosen >= fp32 - 1.0, (rep["recommended"], fp32, chosen)


def test_rerun_reuses_finished_rows(report_run):
    out, args, _ = report_run
    before = json.loads((out / "report.json").read_text())
    r = CliRunner().invoke(app, [*args[:-2], "--latency-budget", "100ms", "--max-drop", "100", "-o", str(out)])
    assert r.exit_code == 0, r.output
    after = json.loads((out / "report.json").read_text())
    assert [x["latency_ms"] for x in after["rows"]] == [x["latency_ms"] for x in before["rows"]]  # not re-timed
    assert after["max_drop"] == "100" and after["recommended"] is not None


def test_pareto_and_recommendation_rules():
    def row(name, metric, ms, drop):
        return {"recipe": name, "metric": metric, "drop": drop, "drop_ci95": [drop, drop],
                "latency_ms": {"median": ms, "p90": ms}}  # fmt: skip

    rows = [row("fp32", 96.0, 10.0, 0.0), row("a", 95.8, 5.0, 0.2), row("b", 94.0, 4.0, 2.0), row("c", 95.0, 6.0, 1.0)]
    assert pareto(rows) == ["fp32", "a", "b"]  # c is slower and worse than a
    assert recommend(rows, 1.0, None)[0] == "a"
    assert recommend(rows, 5.0, None)[0] == "b"
    assert recommend(rows, None, 4.5)[0] == "b"
    assert recommend(rows, 0.1, None)[0] == "fp32"
    assert recommend(rows, None, 1.0)[0] is None


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--metric", "median"], "unknown metric"),
        (["--metric", "custom:nope"], "custom:module:function"),
        (["--latency-budget", "fast"], "--latency-budget"),
        (["--lengths", "16"], "--lengths times a ranged artifact"),
        (["--lengths", "8,x"], "malformed sizes"),
    ],
)
def test_report_errors_are_clear(digits, tmp_path, extra, message):
    data, onnx_path, calib, _ = digits
    eval_npz = tmp_path / "eval.npz"
    np.savez(eval_npz, pixel_values=data["x_test"][:4, None], labels=data["y_test"][:4])
    args = ["report", str(onnx_path), "--eval", str(eval_npz), "--recipes", "fp32", "--runs", "1", "-o",
            str(tmp_path / "r"), *extra]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_top1_without_labels_and_missing_eval_are_clear(digits, tmp_path):
    data, onnx_path, *_ = digits
    unlabelled = tmp_path / "eval.npz"
    np.savez(unlabelled, pixel_values=data["x_test"][:4, None])
    for eval_path, message in ((unlabelled, "labels"), (tmp_path / "none.npz", "not found")):
        r = CliRunner().invoke(app, ["report", str(onnx_path), "--eval", str(eval_path), "--recipes", "fp32",
                                     "--runs", "1", "-o", str(tmp_path / "r")])  # fmt: skip
        assert r.exit_code == 2, r.output
        assert message in r.output


def test_report_html_renders_in_headless_chromium(report_run):
    """Debian's chromium (scripts/test.sh installs it) renders report.html: the table is in the DOM
    and the screenshot shows the plot's points and the ring of the recommendation. The screenshot
    is kept in build/test-artifacts/report.png."""
    import shutil
    import subprocess

    from PIL import Image

    out, *_ = report_run
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "headless chromium is needed: apt-get install chromium (scripts/test.sh does)"
    page = (out / "report.html").resolve().as_uri()
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*common, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<tr>") == 4 and 'id="pareto"' in dom and "Recommended:" in dom
    assert dom.count('class="sensitivity"') == 2  # the bar charts of int8 and int8-integer-only
    shots = ROOT / "build" / "test-artifacts"
    shots.mkdir(parents=True, exist_ok=True)
    png = shots / "report.png"
    png.unlink(missing_ok=True)
    subprocess.run([*common, f"--screenshot={png}", "--window-size=1000,1100", page], capture_output=True,
                   timeout=120, check=True)  # fmt: skip
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)

    def pixels(rgb) -> int:
        return int((np.abs(img - np.array(rgb)).sum(axis=-1) < 40).sum())

    points = pixels([31, 119, 180]) + pixels([127, 127, 127])  # front (tab:blue) and the others (tab:gray)
    assert points > 150 and pixels([214, 39, 40]) > 50, "no plotted points or recommendation ring in the screenshot"
    assert (img.sum(axis=-1) < 200).sum() > 1000  # text and table borders drew


def test_compare_shows_what_changed(report_run, tmp_path):
    out, *_ = report_run
    rep = json.loads((out / "report.json").read_text())
    changed = json.loads(json.dumps(rep))
    changed["timing"]["threads"] = 2
    changed["rows"][1]["latency_ms"]["median"] = rep["rows"][1]["latency_ms"]["median"] * 2
    changed["rows"] = changed["rows"][:2] + [{**changed["rows"][1], "recipe": "int8:observer=mse"}]
    changed["recommended"], changed["reason"] = "fp32", "because"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "report.json").write_text(json.dumps(changed))
    r = CliRunner().invoke(app, ["report", "--compare", str(out), str(tmp_path / "b" / "report.json")])
    assert r.exit_code == 0, r.output
    assert "- timing changed:" in r.output and '"threads": 2' in r.output
    assert "| int8 |" in r.output and "| 2.00x |" in r.output
    assert "| int8-integer-only | only in " in r.output and "| int8:observer=mse | only in " in r.output
    assert f"Recommended: {rep['recommended']} -> fp32" in r.output or rep["recommended"] == "fp32"
    (tmp_path / "bad.json").write_text("{}")
    for bad, message in ((tmp_path / "bad.json", "not a report.json"), (tmp_path / "none", "no report at")):
        r = CliRunner().invoke(app, ["report", "--compare", str(out), str(bad)])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_report_needs_model_eval_and_output(tmp_path):
    r = CliRunner().invoke(app, ["report", "--eval", str(tmp_path / "e.npz")])
    assert r.exit_code == 2 and "report needs MODEL, --output" in r.output


def test_report_times_a_ranged_artifact_at_each_length(tmp_path):
    """``report --input-shape ...=1x1..32 --lengths 8,32``: one ranged artifact per recipe, timed at
    each length; report.md gets the table of median ms by length."""
    from helpers import EXAMPLE_ONNX

    data = np.load(EXAMPLE_ONNX.parent / "tiny_bert_calib.npz")
    eval_npz = tmp_path / "eval.npz"
    np.savez(eval_npz, **{k: v[:4] for k, v in data.items()})
    out = tmp_path / "r"
    args = ["report", str(EXAMPLE_ONNX), "--eval", str(eval_npz), "--recipes", "fp32", "--metric", "cosine",
            "--runs", "2", "--input-shape", "input_ids=1x1..32", "--input-shape", "attention_mask=1x1..32",
            "--lengths", "8,32", "-o", str(out)]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    row = json.loads((out / "report.json").read_text())["rows"][0]
    assert list(row["latency_ms"]["by_length"]) == ["8", "32"]
    assert all(v > 0 for v in row["latency_ms"]["by_length"].values())
    assert "Median ms by input length" in (out / "report.md").read_text()

