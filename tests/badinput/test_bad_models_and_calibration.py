"""Bad models and bad calibration data through ``edgecompile compile``: one clear error line and
exit 2 (or, for degenerate but usable data, a ``warning:`` line), never TVM's text or a crash."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from badinput_support import VOCAB, cli, one_error_line
from helpers import EXAMPLE_ONNX
from onnx import TensorProto, helper

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])


def _save(tmp_path, nodes, opset=17, inputs=(X,), outputs=(Y,), name="m.onnx"):
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    onnx.save(model, path)
    return path


def _nms(tmp_path):
    boxes = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 6, 4])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 6])
    sel = helper.make_tensor_value_info("sel", TensorProto.INT64, None)
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel"], name="nms")
    return _save(tmp_path, [node], inputs=(boxes, scores), outputs=(sel,))


BAD_GRAPHS = {
    "node reads its own output": (
        lambda t: _save(t, [helper.make_node("Add", ["x", "y"], ["y"], name="self_loop")]),
        "cycle",
    ),
    "two nodes read each other": (
        lambda t: _save(
            t,
            [helper.make_node("Add", ["x", "b"], ["a"], name="n1"), helper.make_node("Relu", ["a"], ["b"], name="n2")]
            + [helper.make_node("Identity", ["a"], ["y"], name="out")],
        ),
        "cycle",
    ),
    "input nothing produces": (lambda t: _save(t, [helper.make_node("Add", ["x", "ghost"], ["y"], name="n")]), "ghost"),
    "NonMaxSuppression": (_nms, "NonMaxSuppression"),
    "unknown op": (lambda t: _save(t, [helper.make_node("FrobnicateX", ["x"], ["y"], name="frob")]), "FrobnicateX"),
    "opset 99": (lambda t: _save(t, [helper.make_node("Relu", ["x"], ["y"])], opset=99), "opset"),
    # an op that left the standard with no conversion: onnx's version converter cannot bring it to 13
    "opset 7": (lambda t: _save(t, [helper.make_node("ImageScaler", ["x"], ["y"], scale=2.0)], opset=7), "opset 7"),
    "no outputs": (lambda t: _save(t, [helper.make_node("Relu", ["x"], ["y"])], outputs=()), "ONNX"),
}


@pytest.mark.parametrize("case", sorted(BAD_GRAPHS))
def test_bad_graph_is_one_clear_error(tmp_path, case):
    make, msg = BAD_GRAPHS[case]
    line = one_error_line(cli("compile", make(tmp_path), "-o", tmp_path / "out"))
    assert msg in line, line
    assert "[" not in line.split("error:")[0] and not (tmp_path / "out").exists()


def test_mask_and_ids_of_different_lengths_is_one_clear_error(tmp_path):
    shapes = ["--input-shape", "input_ids=1x32", "--input-shape", "attention_mask=1x16"]
    line = one_error_line(cli("compile", EXAMPLE_ONNX, *shapes, "-o", tmp_path / "out"))
    assert "input_ids" in line and "attention_mask" in line


def _calib(tmp_path, ids=None, x=None, n=8, name="calib.npz"):
    rng = np.random.default_rng(0)
    arrays = {
        "ids": rng.integers(0, VOCAB, (n, 1, 4)) if ids is None else ids,
        "x": rng.standard_normal((n, 1, 4, 8)).astype(np.float32) if x is None else x,
    }
    path = tmp_path / name
    np.savez(path, **{k: v for k, v in arrays.items() if v is not False})
    return path


def _nan_x(t):
    x = np.random.default_rng(0).standard_normal((8, 1, 4, 8)).astype(np.float32)
    x[5, 0, 2, 3] = np.nan
    return _calib(t, x=x)


BAD_CALIB = {
    "missing file": (lambda t: t / "none.npz", "not found"),
    "not an npz": (lambda t: (t / "c.npz").write_text("nope") and t / "c.npz", "cannot read calibration file"),
    "empty dir": (lambda t: (t / "d").mkdir() or t / "d", "has no .npz files"),
    "lacks an input": (lambda t: _calib(t, x=False), "lacks input"),
    "unknown input": (
        lambda t: (
            np.savez(
                t / "c.npz",
                ids=np.zeros((2, 1, 4), np.int64),
                x=np.zeros((2, 1, 4, 8), np.float32),
                extra=np.zeros((2, 1)),
            )  # fmt: skip
            or t / "c.npz"
        ),
        "unknown input",
    ),
    "no sample axis": (lambda t: _calib(t, ids=np.zeros((1, 4), np.int64), x=np.zeros((1, 4, 8), np.float32)), "shape"),
    "sample counts differ": (lambda t: _calib(t, ids=np.zeros((3, 1, 4), np.int64)), "same leading sample axis"),
    "wrong shape": (lambda t: _calib(t, x=np.zeros((8, 1, 4, 9), np.float32)), "shape"),
    "ids above vocab": (lambda t: _calib(t, ids=np.full((8, 1, 4), VOCAB + 5000)), "ids"),
    "ids 1e12": (lambda t: _calib(t, ids=np.full((8, 1, 4), 10**12)), "1000000000000"),
    "ids below -vocab": (lambda t: _calib(t, ids=np.full((8, 1, 4), -VOCAB - 1)), "ids"),
    "NaN in x": (_nan_x, "NaN"),
    "Inf in x": (lambda t: _calib(t, x=np.full((8, 1, 4, 8), np.inf, np.float32)), "inf"),
    "float ids": (lambda t: _calib(t, ids=np.zeros((8, 1, 4), np.float32)), "ids"),
    "zero samples": (
        lambda t: _calib(t, ids=np.zeros((0, 1, 4), np.int64), x=np.zeros((0, 1, 4, 8), np.float32)),
        "no samples",
    ),  # fmt: skip
    "object arrays": (
        lambda t: np.savez(t / "c.npz", ids=np.array([None] * 8, dtype=object)) or t / "c.npz",
        "cannot read calibration file",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CALIB))
def test_bad_calibration_is_one_clear_error(embed_onnx, tmp_path, case):
    make, msg = BAD_CALIB[case]
    line = one_error_line(
        cli("compile", embed_onnx, "--recipe", "int8", "--calib", make(tmp_path), "-o", tmp_path / "o")
    )
    assert msg.lower() in line.lower(), line
    assert not (tmp_path / "o").exists()


def test_keep_float_naming_no_layer_is_an_error(embed_onnx, tmp_path):
    calib = _calib(tmp_path)
    line = one_error_line(
        cli(
            "compile",
            embed_onnx,
            "--recipe",
            "int8",
            "--calib",
            calib,
            "--keep-float",
            "linear.99",
            "-o",
            tmp_path / "o",
        )
    )
    assert "linear.99" in line and "names no layer" in line


def test_all_zero_calibration_warns_what_it_means(embed_onnx, tmp_path):
    """Zero ids still gather real rows, so one layer sees data and the compile goes on; the warnings
    name the constant input and the layer that saw only zeros (every layer: an error, see
    tests/unit/calibrate/test_zero_ranges.py)."""
    calib = _calib(tmp_path, ids=np.zeros((8, 1, 4), np.int64), x=np.zeros((8, 1, 4, 8), np.float32))
    r = cli("compile", embed_onnx, "--recipe", "int8", "--calib", calib, "-o", tmp_path / "o")
    assert r.exit_code == 0, r.output
    warned = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert any("'x' is constant (all zeros)" in w for w in warned), r.output
    assert any("1 of 2 layers to quantize saw only zeros" in w and "add.0" in w for w in warned), r.output
