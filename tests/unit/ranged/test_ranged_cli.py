"""The ranged artifact from the command line: compile with a range and bucket sizes, inspect shows
the ranges, bench times one length, run takes any length in range; a length out of range exits 2."""

from __future__ import annotations

import json

import numpy as np
from helpers import EXAMPLE_ONNX
from typer.testing import CliRunner

from edgecompile.cli import app

runner = CliRunner()


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_compile_inspect_bench_run(tmp_path):
    art = tmp_path / "a"
    res = _cli("compile", EXAMPLE_ONNX, "--input-shape", "input_ids=1x1..32", "--input-shape",
               "attention_mask=1x1..32", "--buckets", "seq=8,32", "-o", art)  # fmt: skip
    assert res.exit_code == 0, res.output
    shown = _cli("inspect", art)
    assert "input input_ids: 1x1..32 int64" in shown.output, shown.output
    assert "output last_hidden_state: 1xseqx64" in shown.output
    assert "ranged 'seq': 1..32, builds at 8, 32" in shown.output
    bench = _cli("bench", art, "--input-shape", "input_ids=1x5", "--runs", "3", "--json")
    assert bench.exit_code == 0, bench.output
    assert json.loads(bench.stdout)["runs"] == 3
    np.savez(tmp_path / "in.npz", input_ids=np.ones((1, 5), np.int64), attention_mask=np.ones((1, 5), np.int64))
    ran = _cli("run", art, "--input", tmp_path / "in.npz", "-o", tmp_path / "out.npz")
    assert ran.exit_code == 0, ran.output
    assert np.load(tmp_path / "out.npz")["last_hidden_state"].shape == (1, 5, 64)
    far = _cli("bench", art, "--input-shape", "input_ids=1x40")
    assert far.exit_code == 2 and "outside the range 1..32" in far.output, far.output
