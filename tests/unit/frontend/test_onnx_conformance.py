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
    cases = load_node_cases(ops={k.split("@")[0] for k in claimed})
    cases = [c for c in cases if c.key in claimed or c.key + "#0" in claimed]
    results = run_cases(cases, jobs=os.cpu_count() or 1)
    ops = summarize(results)
    with capsys.disabled():
        print(f"\nONNX node cases for the {len(claimed)} op versions inspect claims as supported:")
        for key, e in ops.items():
            if key not in claimed:
                continue
            print(f"  {key:<34} {e['passed']:>3}/{e['total']}")
        behind = [e for k, e in ops.items() if k in claimed]
        passed, total = sum(e["passed"] for e in behind), sum(e["total"] for e in behind)
        print(f"  total: {passed}/{total} cases behind the claims pass")
    failing = {k: e["failing"] for k, e in ops.items() if k in claimed and e["passed"] != e["total"]}
    assert not failing, f"claimed op versions fail conformance: {failing}"
    assert claimed <= set(ops)


@pytest.mark.parametrize(
    "op,version,first_only,status",
    [
        ("MatMul", 13, True, "supported"),
        ("Softmax", 13, True, "supported"),
        ("Gemm", 13, True, "supported"),
        # TVM computes Y but not the optional Mean/InvStdDev outputs.
        ("LayerNormalization", 17, True, "supported"),
        ("LayerNormalization", 17, False, "failing"),
        ("NoSuchOp", 1, True, "unsupported"),
    ],
)
def test_transformer_ops_are_classified(op, version, first_only, status):
    assert classify(op, version, op != "NoSuchOp", first_only)[0] == status
