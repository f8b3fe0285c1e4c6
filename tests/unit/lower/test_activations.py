"""Sigmoid and SiLU are lowered through the vectorized fast exp, not libm's scalar expf
(lower/pipeline.py DecomposeActivations), and still give ONNX Runtime's outputs, saturated
inputs included (float tolerance 1e-6 absolute: the outputs lie in [0, 1] and x * [0, 1])."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgecompile


def _model(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Sigmoid", ["x"], ["s"]),
            helper.make_node("Mul", ["x", "s"], ["silu"]),
            helper.make_node("Add", ["silu", "s"], ["y"]),
        ],
        "act",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 1000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 1000]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [4, 1000])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_sigmoid_and_silu_match_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = _model(tmp_path / "act.onnx")
    art = edgecompile.compile(path, output=tmp_path / "art")
    x = np.random.default_rng(0).normal(0, 6, (4, 1000)).astype(np.float32)
    x[0, :6] = [-1e4, -100.0, -88.8, 0.0, 88.8, 1e4]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = edgecompile.load(art).run({"x": x})
    for name, r in zip(["y", "s"], ref):
        assert np.isfinite(got[name]).all()
        np.testing.assert_allclose(got[name], r, rtol=1e-5, atol=1e-6)
    names = [k["name"] for k in json.loads((art / "manifest.json").read_text())["kernels"]]
    assert not [n for n in names if "sigmoid" in n], names
    assert any("fast_exp" in n for n in names), names
