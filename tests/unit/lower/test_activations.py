"""Sigmoid and SiLU are lowered through our vectorized polynomial exp (passes/poly_exp.py), not
libm's scalar expf (lower/pipeline.py DecomposeActivations), and still give ONNX Runtime's
outputs, saturated inputs included (float tolerance 1e-6 absolute: the outputs lie in [0, 1] and
x * [0, 1]); the exp itself is within its stated relative error of float64's."""

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
    assert any("exp_poly" in n for n in names), names


def _exp_model(path, n: int):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Exp", ["x"], ["y"])], "exp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_exp_is_within_its_stated_relative_error(tmp_path):
    """Over the whole finite range of float32 exp (and the ``n`` boundaries of its range
    reduction), relative error within 2.5e-7 of float64's exp: the bound poly_exp states. Beyond
    the clamp the results are its stated limits, finite and positive. (NaN, which the runtime
    refuses as an input, stays NaN: test_bool_select's softmax guard.)"""
    from edgecompile.passes.poly_exp import EXP_HI, EXP_LO

    rng = np.random.default_rng(7)
    inner = np.concatenate([
        rng.uniform(EXP_LO, EXP_HI, 200_000), rng.uniform(-1, 1, 20_000),
        np.arange(-125, 127) * np.log(2) + 0.5 * np.log(2) * np.array([-1, 1])[:, None].repeat(126, 1).ravel(),
        [0.0, EXP_LO, EXP_HI],
    ]).astype(np.float32)  # fmt: skip
    beyond = np.array([-1e4, -100.0, 100.0, 1e4], np.float32)
    x = np.concatenate([inner, beyond])
    art = edgecompile.compile(_exp_model(tmp_path / "exp.onnx", x.size), output=tmp_path / "art")
    got = edgecompile.load(art).run({"x": x})["y"]
    ref = np.exp(inner.astype(np.float64))
    rel = np.abs(got[: inner.size] - ref) / ref
    assert rel.max() <= 2.5e-7, (rel.max(), inner[rel.argmax()])
    tail = got[inner.size :]
    assert np.isfinite(tail).all() and (tail > 0).all()
    assert tail[0] == tail[1] and abs(tail[0] / 2.0**-126 - 1) < 1e-5 and tail[2] == tail[3] > 1e38
