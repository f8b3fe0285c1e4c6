"""Models exported at an opset older than 13 (Paddle2ONNX's PP-OCR ships opset 12) are brought to
opset 13 by onnx's version converter and compiled; one it cannot convert is refused, saying so."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, ort_run
from onnx import TensorProto, helper, numpy_helper

import edgecompile
from edgecompile.errors import ModelLoadError
from edgecompile.frontend import import_model


def _opset12_model():
    """The ops whose form changed at opset 13: Squeeze, Unsqueeze and ReduceSum take their axes as
    an attribute, Split its sizes."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["x4"], axes=[1]),  # [1, 1, 6, 8]
        helper.make_node("Squeeze", ["x4"], ["x3"], axes=[1]),
        helper.make_node("MatMul", ["x3", "w"], ["h"]),
        helper.make_node("Split", ["h"], ["a", "b"], axis=2, split=[3, 5]),
        helper.make_node("ReduceSum", ["a"], ["sa"], axes=[2], keepdims=1),
        helper.make_node("Mul", ["b", "sa"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=8)


def test_an_opset_12_model_is_upgraded_and_matches_onnx_runtime(tmp_path):
    path = tmp_path / "old.onnx"
    path.write_bytes(_opset12_model().SerializeToString())
    feeds = {"x": np.random.default_rng(1).normal(size=(1, 6, 8)).astype(np.float32)}
    art = edgecompile.compile(path, output=tmp_path / "art")
    model = edgecompile.load(art)
    assert model.manifest["source"]["opset_shipped"] == 12
    assert model.manifest["source"]["opset"] == 13
    assert_close(ort_run(path, feeds)["y"], model.run(feeds)["y"])


def test_an_opset_the_converter_cannot_upgrade_is_refused():
    """ImageScaler left the standard at opset 8 with no conversion: the model is refused with the fix."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph([helper.make_node("ImageScaler", ["x"], ["y"], scale=2.0)], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    with pytest.raises(ModelLoadError, match="opset 7, and onnx's version converter could not bring it to opset 13"):
        import_model(model)
