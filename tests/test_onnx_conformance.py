"""ONNX node conformance: every op version `inspect` claims as supported passes all of its cases
from the onnx package (expected outputs computed by onnx's numpy reference), here and now."""

from __future__ import annotations

import os

import onnx
import pytest
import tvm

from edgecompile.frontend.conformance import load_node_cases, run_cases, summarize
from edgecompile.frontend.op_support import classify, load_table

TABLE = load_table()


def test_table_matches_the_pinned_versions():
    assert TABLE["generated_with"] == {"tvm": tvm.__version__, "onnx": onnx.__version__}, (
        "onnx_support.json was generated with other versions: run python tools/gen_onnx_support.py"
    )


def test_claimed_op_versions_pass_their_conformance_cases(capsys):
    claimed = {k for k, e in TABLE["ops"].items() if e["passed"] == e["total"]}
    assert len(claimed) > 150
    cases = [
        c for c in load_node_cases(ops={k.split("@")[0] for k in claimed}) if f"{c.op_key[0]}@{c.op_key[1]}" in claimed
    ]
    results = run_cases(cases, jobs=os.cpu_count() or 1)
    ops = summarize(results)
    with capsys.disabled():
        print(f"\nONNX node cases for the {len(claimed)} op versions inspect claims as supported:")
        for key, e in ops.items():
            print(f"  {key:<34} {e['passed']:>3}/{e['total']}")
        print(f"  total: {sum(e['passed'] for e in ops.values())}/{len(results)} cases pass")
    failing = {k: e["failing"] for k, e in ops.items() if e["passed"] != e["total"]}
    assert not failing, f"claimed op versions fail conformance: {failing}"
    assert set(ops) == claimed


@pytest.mark.parametrize(
    "op,version,status",
    [
        ("MatMul", 13, "supported"),
        ("Softmax", 13, "supported"),
        ("Gemm", 13, "supported"),
        ("LayerNormalization", 17, None),
        ("NoSuchOp", 1, "unsupported"),
    ],
)
def test_transformer_ops_are_classified(op, version, status):
    got, entry = classify(op, version, op != "NoSuchOp")
    if status is None:  # whatever it is, it must agree with the recorded cases
        status = "supported" if entry["passed"] == entry["total"] else ("partial" if entry["passed"] else "failing")
    assert got == status
