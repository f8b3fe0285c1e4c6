"""Where the time goes: the kernel table the compiler records (rule per kernel, calls, estimated
operations), ``bench --profile`` / ``CompiledModel.profile`` and the compile-time warning for
kernels left to the fallback schedule."""

from __future__ import annotations

import json
import math

import pytest
from helpers import EXAMPLE_INPUTS
from typer.testing import CliRunner

import edgecompile
from edgecompile.cli import app


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def kernels(example_artifact) -> list[dict]:
    return json.loads((example_artifact / "manifest.json").read_text())["kernels"]


def test_every_kernel_has_the_rule_that_scheduled_it(kernels):
    names = [k["name"] for k in kernels]
    assert len(names) == len(set(names)) > 10
    assert {k["rule"] for k in kernels} <= {"ours:Matmul", "ours:RowReduction", "ours:Elementwise", "dlight:GEMV",
                                            "dlight:Reduction", "ours:Int8Matmul", "hand-written", "fallback"}
    gemms = [k for k in kernels if "matmul" in k["name"]]
    assert gemms and all(k["rule"] == "ours:Matmul" for k in gemms)
    # the example's first FFN GEMM: 32 tokens x 64 -> 128 (x2 ops a multiply-add) and its epilogue
    assert all(k["ops"] > 0 and k["calls"] >= 1 for k in kernels)
    assert kernels == sorted(kernels, key=lambda k: (-k["ops"] * k["calls"], k["name"]))


def test_profile_times_every_kernel_the_vm_calls(example_artifact, example_feeds, kernels):
    prof = edgecompile.load(example_artifact).profile(repeats=3, runs=5, threads=1, feeds=example_feeds)
    got = {k.name: k for k in prof.kernels}
    assert set(got) == {k["name"] for k in kernels}
    for k in kernels:
        row = got[k["name"]]
        assert row.calls == k["calls"] and row.rule == k["rule"]
        assert row.total_ms > 0 and math.isclose(row.mean_us * row.calls / 1e3, row.total_ms, rel_tol=1e-9)
        assert row.gops is not None and row.gops > 0
    assert prof.run_ms > 0 and prof.outside_ms >= 0
    assert [k.total_ms for k in prof.kernels] == sorted((k.total_ms for k in prof.kernels), reverse=True)


def test_bench_profile_and_inspect_kernels_commands(example_artifact, kernels):
    r = cli("bench", example_artifact, "--profile", "--json", "--threads", 1, "--runs", 3, "--input", EXAMPLE_INPUTS)
    assert r.exit_code == 0, r.output
    prof = json.loads(r.stdout)
    assert {k["name"] for k in prof["kernels"]} == {k["name"] for k in kernels} and prof["run_ms"] > 0
    r = cli("bench", example_artifact, "--profile", "--threads", 1, "--runs", 3)
    assert r.exit_code == 0 and "outside kernels" in r.stdout and "GOP/s" in r.stdout, r.output
    r = cli("inspect", example_artifact, "--kernels", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == kernels
    r = cli("inspect", example_artifact, "--kernels")
    assert r.exit_code == 0 and "ours:Matmul" in r.stdout


def test_a_kernel_on_the_fallback_schedule_is_a_compile_warning(tmp_path):
    """Full reductions to a scalar are what only the fallback rule takes today."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)],
        "full_sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "sum.onnx")
    r = cli("compile", tmp_path / "sum.onnx", "-o", tmp_path / "art")
    assert r.exit_code == 0, r.output
    warning = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:") and "fallback" in ln]
    assert len(warning) == 1 and "kernel sum" in warning[0] and "100.0%" in warning[0], r.stderr
    r = cli("inspect", tmp_path / "art", "--kernels", "--json")
    assert [(k["name"], k["rule"]) for k in json.loads(r.stdout)] == [("sum", "fallback")]
