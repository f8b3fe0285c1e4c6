"""Calibration whose activations are all zero: a clear error when every layer saw only zeros, a
warning naming the layers when some did (quant/plan.py's decision)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import edgecompile
from edgecompile.errors import CalibrationError, EdgeCompileWarning


def _model(path, dead_branch: bool):
    """y = x @ W1 (+ (x * 0) @ W2 with ``dead_branch``: a layer whose input is always zero). Rows
    of 32: at least two vectors on every CPU, so the run-time scale's row max ``int8`` gives
    ``linear.0`` is on our schedule, not the fallback (whose warning these tests would count)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "w1")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="proj")]
    out = "a"
    if dead_branch:
        inits += [
            numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "w2"),
            numpy_helper.from_array(np.zeros((1, 32), np.float32), "zero"),
        ]
        nodes += [
            helper.make_node("Mul", ["x", "zero"], ["z"], name="kill"),
            helper.make_node("MatMul", ["z", "w2"], ["b"], name="dead"),
            helper.make_node("Add", ["a", "b"], ["y"], name="sum"),
        ]
        out = "y"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [4, 32])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_all_zero_calibration_is_an_error(tmp_path):
    path = _model(tmp_path / "m.onnx", dead_branch=False)
    calib = [{"x": np.zeros((4, 32), np.float32)} for _ in range(3)]
    with pytest.warns(EdgeCompileWarning, match="all zeros"):  # the data check says so first
        with pytest.raises(CalibrationError, match=r"every layer to quantize \(linear.0\) saw only zeros") as info:
            edgecompile.compile(path, output=tmp_path / "q", recipe="int8", calib=calib)
    assert info.value.exit_code == 2
    assert not (tmp_path / "q").exists()


def test_some_zero_layers_warn_with_their_names(tmp_path):
    path = _model(tmp_path / "m.onnx", dead_branch=True)
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(4)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        art = edgecompile.compile(path, output=tmp_path / "q", recipe="int8", calib=calib)
    mine = [str(w.message) for w in caught if issubclass(w.category, EdgeCompileWarning)]
    assert len(mine) == 1, mine
    assert mine[0].startswith("2 of 3 layers to quantize saw only zeros in calibration (linear.1, add.0)")
    assert "--keep-float linear.1" in mine[0]
    x = calib[0]["x"]
    assert np.isfinite(edgecompile.load(art).run({"x": x})["y"]).all()


def test_kept_float_zero_layers_are_not_counted(tmp_path):
    path = _model(tmp_path / "m.onnx", dead_branch=True)
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", EdgeCompileWarning)
        edgecompile.compile(path, output=tmp_path / "q", recipe="int8", calib=calib, keep_float=["linear.1", "add.0"])
