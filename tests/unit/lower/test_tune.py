"""Optional tuning: a database per target, seeded with our own schedules, reused across compiles,
and a tuned build only when it is faster end to end."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgecompile
from edgecompile.errors import BuildError


def _mlp(path, seed=0):
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((64, 48)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(48).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [32, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [32, 48])],
        [w, b],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return numpy_helper.to_array(w), numpy_helper.to_array(b)


def _records(db_root):
    files = list(db_root.glob("*/database_tuning_record.json"))
    assert len(files) == 1, files
    return files[0].read_text().splitlines()


def test_tune_builds_a_database_and_reuses_it(tmp_path):
    w, b = _mlp(tmp_path / "mlp.onnx")
    db = tmp_path / "db"
    seen = []
    art = edgecompile.compile(
        tmp_path / "mlp.onnx",
        target="native",
        output=tmp_path / "a",
        tune=2,
        tuning_db=db,
        tune_progress=lambda done, total, _t: seen.append((done, total)),
    )
    records = _records(db)
    # Our own schedule of every kernel is measured and recorded, then the search adds trials.
    assert len(records) >= 2
    assert seen and seen[-1][1] == 2
    x = np.random.default_rng(1).standard_normal((32, 64)).astype(np.float32)
    y = edgecompile.load(art).run({"x": x})["y"]
    np.testing.assert_allclose(y, np.maximum(x @ w + b, 0), rtol=1e-4, atol=1e-4)
    assert json.loads((art / "manifest.json").read_text())["tuning"] == {"trials": 2}
    # A second compile finds every kernel in the database: nothing is tuned again.
    edgecompile.compile(tmp_path / "mlp.onnx", target="native", output=tmp_path / "b", tune=2, tuning_db=db)
    assert _records(db) == records


def test_tune_needs_a_cpu_target_of_this_machine(tmp_path):
    _mlp(tmp_path / "mlp.onnx")
    with pytest.raises(BuildError, match="--tune measures on this machine"):
        edgecompile.compile(
            tmp_path / "mlp.onnx", target="aarch64-linux", output=tmp_path / "a", tune=2, tuning_db=tmp_path / "db"
        )
