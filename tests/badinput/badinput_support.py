"""Helpers of the bad-input suite (fixtures are in its conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edgecompile.cli import app

runner = CliRunner()
VOCAB = 50


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, code: int = 2) -> str:
    """The single ``error:`` line of a failed command (exit ``code``, no traceback, no internal error)."""
    text = result.output
    assert result.exit_code == code, text
    assert "Traceback" not in text and "internal error" not in text, text
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


def embed_model(path: Path) -> Path:
    """ids[1,4] int64 -> Gather(table[VOCAB,8]) + x[1,4,8] float32 -> MatMul(W[8,3]): one token-id
    input (valid_range from the Gather) and one float input."""
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((VOCAB, 8)).astype(np.float32), "table")
    w = numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed"),
        helper.make_node("Add", ["emb", "x"], ["h"], name="add"),
        helper.make_node("MatMul", ["h", "w"], ["y"], name="proj"),
    ]
    graph = helper.make_graph(
        nodes,
        "embed",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3])],
        [table, w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path
