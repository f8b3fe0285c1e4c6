"""The ``edgecompile`` command: the main flow, complete help, and one clear line plus a non-zero
exit for every kind of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import EXAMPLE_INPUTS, EXAMPLE_ONNX
from onnx import TensorProto, helper
from typer.testing import CliRunner

from edgecompile.cli import app

runner = CliRunner()
SHAPES = ["--input-shape", "input_ids=1x32", "--input-shape", "attention_mask=1x32"]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_main_flow(tmp_path, example_feeds):
    art = tmp_path / "tb"
    r = cli("compile", EXAMPLE_ONNX, "--target", "native", *SHAPES, "-o", art)
    assert r.exit_code == 0, r.output
    assert "compiled tiny_bert.onnx for native" in r.stdout
    r = cli("run", art, "--input", EXAMPLE_INPUTS, "--output", tmp_path / "out.npz")
    assert r.exit_code == 0, r.output
    assert "last_hidden_state: shape 1x32x64 float32" in r.stdout
    out = np.load(tmp_path / "out.npz")
    import edgecompile

    ref = edgecompile.load(art).run(example_feeds)
    assert np.array_equal(out["pooled"], ref["pooled"])
    np.save(tmp_path / "ids.npy", example_feeds["input_ids"])
    np.save(tmp_path / "mask.npy", example_feeds["attention_mask"])
    r = cli(
        "run", art, "--input", f"input_ids={tmp_path / 'ids.npy'}", "--input", f"attention_mask={tmp_path / 'mask.npy'}"
    )
    assert r.exit_code == 0, r.output
    r = cli("bench", art, "--runs", 5, "--threads", 1, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["runs"] == 5 and res["threads"] == 1 and 0 < res["min_ms"] <= res["median_ms"] <= res["p90_ms"]
    manifest = json.loads((art / "manifest.json").read_text())
    assert res["weights_bytes"] == (art / "weights.bin").stat().st_size == manifest["memory"]["weights_bytes"]
    assert res["arena_bytes"] == manifest["memory"]["arena_bytes"] > 0
    assert res["peak_rss_bytes"] > res["weights_bytes"] and res["load_ms"] > 0
    r = cli("bench", art, "--runs", 3)
    assert r.exit_code == 0 and "memory: peak RSS" in r.stdout and "arena" in r.stdout, r.output
    r = cli("inspect", art)
    assert r.exit_code == 0 and "input input_ids: 1x32 int64" in r.stdout
    assert "memory plan: weights" in r.stdout and "activation arena" in r.stdout


def test_targets_lists_profiles_one_line_each():
    r = cli("targets")
    assert r.exit_code == 0
    lines = r.stdout.strip().splitlines()
    assert len(lines) >= 11 and any(ln.startswith("x86_64-avx512 ") for ln in lines)
    r = cli("targets", "--json")
    assert {"cuda-sm90", "opencl-adreno"} <= {p["name"] for p in json.loads(r.stdout)}


def test_inspect_reports_op_coverage():
    r = cli("inspect", EXAMPLE_ONNX, "--json")
    assert r.exit_code == 0, r.output
    rows = {row["op_type"]: row for row in json.loads(r.stdout)}
    assert rows["MatMul"]["status"] == "supported" and rows["MatMul"]["passed"] == rows["MatMul"]["total"] > 0
    assert len(rows["MatMul"]["nodes"]) == 16
    assert rows["LayerNormalization"]["status"] == "supported"  # only Y is used
    r = cli("inspect", EXAMPLE_ONNX)
    assert "op coverage" in r.stdout and "MatMul" in r.stdout


@pytest.mark.parametrize("command", ["compile", "run", "bench", "inspect", "targets"])
def test_every_subcommand_has_complete_help(command):
    r = cli(command, "--help")
    assert r.exit_code == 0
    text = r.stdout
    expected = {
        "compile": ["--target", "--input-shape", "--recipe", "--output"],
        "run": ["--input", "--output", "--threads"],
        "bench": ["--runs", "--threads", "--json"],
        "inspect": ["--json"],
        "targets": ["--json"],
    }[command]
    for opt in expected:
        assert opt in text
    r = cli("--help")
    assert r.exit_code == 0 and all(c in r.stdout for c in ("compile", "run", "bench", "inspect", "targets"))


def test_file_not_found(tmp_path):
    assert "model file not found" in one_error_line(cli("compile", tmp_path / "nope.onnx", "-o", tmp_path / "a"))


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("these are my notes, not a model\n" * 10)
    assert "not an ONNX file or corrupt protobuf" in one_error_line(cli("compile", bad, "-o", tmp_path / "a"))


def test_truncated_onnx_file(tmp_path):
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(EXAMPLE_ONNX.read_bytes()[:5000])
    assert "not an ONNX file or corrupt protobuf" in one_error_line(cli("compile", bad, "-o", tmp_path / "a"))


def _model_with_unknown_op(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [
        helper.make_node("Relu", ["x"], ["h"], name="relu0"),
        helper.make_node("FancyActivation", ["h"], ["y"], name="blocks.0.act"),
    ]
    onnx.save(
        helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]), path
    )


def test_unsupported_op_names_node_and_op(tmp_path):
    path = tmp_path / "custom.onnx"
    _model_with_unknown_op(path)
    line = one_error_line(cli("compile", path, "-o", tmp_path / "a"))
    assert "node 'blocks.0.act' (op FancyActivation)" in line
    r = cli("inspect", path)
    assert r.exit_code == 1 and "FancyActivation" in r.stdout and "blocks.0.act" in r.stdout


def test_missing_input_shape(tmp_path):
    line = one_error_line(cli("compile", EXAMPLE_ONNX, "-o", tmp_path / "a"))
    assert "input 'input_ids' has symbolic dimension 'batch'" in line and "--input-shape input_ids=" in line


def test_malformed_input_shape(tmp_path):
    line = one_error_line(cli("compile", EXAMPLE_ONNX, "--input-shape", "input_ids=1by32", "-o", tmp_path / "a"))
    assert "malformed shape '1by32'" in line


def test_unknown_target_suggests(tmp_path):
    line = one_error_line(cli("compile", EXAMPLE_ONNX, *SHAPES, "--target", "x86-avx512", "-o", tmp_path / "a"))
    assert "unknown target 'x86-avx512'" in line and "did you mean" in line and "x86_64-avx512" in line


def test_unknown_recipe(tmp_path):
    line = one_error_line(cli("compile", EXAMPLE_ONNX, *SHAPES, "--recipe", "fp23", "-o", tmp_path / "a"))
    assert "unknown recipe preset 'fp23'" in line and "fp32" in line


def test_missing_external_data(tmp_path):
    pytest.importorskip("torch")
    import torch
    from models import EncoderStack, export_onnx

    export_onnx(EncoderStack(), (torch.randn(1, 8, 64),), tmp_path / "m.onnx", ["x"], ["y"], dynamo=True)
    for f in tmp_path.glob("*.data"):
        f.unlink()
    line = one_error_line(cli("compile", tmp_path / "m.onnx", "-o", tmp_path / "a"))
    assert "external data file 'm.onnx.data'" in line and "not found" in line


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--input", "token_type_ids={d}/ids.npy", "--input", "{inputs}"], "unknown input 'token_type_ids'"),
        (["--input", "input_ids={d}/ids.npy"], "missing input 'attention_mask'"),
        (
            ["--input", "input_ids={d}/ids32.npy", "--input", "attention_mask={d}/ids.npy"],
            "has dtype int32, the model expects int64",
        ),
        (
            ["--input", "input_ids={d}/short.npy", "--input", "attention_mask={d}/ids.npy"],
            "has shape 1x16, the model was compiled for 1x32",
        ),
        (["--input", "input_ids={d}/nothere.npy"], "input file not found"),
        (["--input", "input_ids={d}/garbage.npy"], "cannot read"),
        ([], "no inputs given"),
    ],
)
def test_run_with_wrong_inputs(example_artifact, tmp_path, args, msg):
    np.save(tmp_path / "ids.npy", np.ones((1, 32), np.int64))
    np.save(tmp_path / "ids32.npy", np.ones((1, 32), np.int32))
    np.save(tmp_path / "short.npy", np.ones((1, 16), np.int64))
    (tmp_path / "garbage.npy").write_text("nope")
    args = [a.format(d=tmp_path, inputs=EXAMPLE_INPUTS) for a in args]
    assert msg in one_error_line(cli("run", example_artifact, *args))


def test_run_tampered_and_incomplete_artifact(example_artifact, tmp_path):
    art = tmp_path / "copy"
    shutil.copytree(example_artifact, art)
    lib = art / "model.so"
    lib.write_bytes(lib.read_bytes() + b"\0")
    assert "model.so was modified or corrupted" in one_error_line(cli("run", art, "--input", EXAMPLE_INPUTS))
    lib.unlink()
    assert "incomplete" in one_error_line(cli("bench", art))
    assert "artifact not found" in one_error_line(cli("run", tmp_path / "none", "--input", EXAMPLE_INPUTS))


def test_refuses_to_overwrite_a_non_artifact_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("important")
    line = one_error_line(cli("compile", EXAMPLE_ONNX, *SHAPES, "-o", tmp_path / "mine"))
    assert "is not an edgecompile artifact" in line
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_installed_command_runs_in_runtime_only_mode(example_artifact):
    """The console script itself: `run` exits 0 and bad input exits 2 with one line, no traceback."""
    exe = shutil.which("edgecompile") or pytest.fail("the edgecompile command is not installed")
    ok = subprocess.run(
        [exe, "run", str(example_artifact), "--input", str(EXAMPLE_INPUTS)], capture_output=True, text=True, timeout=300
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([exe, "compile", "missing.onnx"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: model file not found")
    assert "Traceback" not in bad.stderr
    mod = subprocess.run([sys.executable, "-m", "edgecompile", "targets"], capture_output=True, text=True, timeout=300)
    assert mod.returncode == 0 and "cuda-sm90" in mod.stdout
