"""2-D resizes as a row pass and a column pass (passes/separable_resize.py): every coordinate mode
and rounding an ONNX exporter writes gives ONNX Runtime's outputs (tolerance 1e-5 of the output
range: bilinear keeps TOPI's order of operations; nearest is exact), and no TVM resize2d is left."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import op_then_relu_model

import edgecompile

# name: (mode, coordinate_transformation_mode, nearest_mode, input shape, output size)
CASES = {
    "bilinear half_pixel 2x (torch align_corners=False)": ("linear", "half_pixel", None, (1, 8, 14, 14), (28, 28)),
    "bilinear pytorch_half_pixel 128->224": ("linear", "pytorch_half_pixel", None, (1, 4, 32, 32), (56, 56)),
    "bilinear align_corners 7x9 -> 20x33": ("linear", "align_corners", None, (1, 3, 7, 9), (20, 33)),
    "bilinear asymmetric downscale": ("linear", "asymmetric", None, (2, 3, 40, 36), (17, 20)),
    "nearest asymmetric floor 2x (torch nearest)": ("nearest", "asymmetric", "floor", (1, 8, 14, 14), (28, 28)),
    "nearest half_pixel round_prefer_floor (ONNX default)": (
        "nearest", "half_pixel", "round_prefer_floor", (1, 4, 10, 15), (25, 34)
    ),
    "nearest align_corners round_prefer_ceil": ("nearest", "align_corners", "round_prefer_ceil", (1, 2, 9, 9), (4, 31)),
}  # fmt: skip


def _model(path, mode, coord, nearest, xshape, size):
    from onnx import helper, numpy_helper

    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    if nearest:
        attrs["nearest_mode"] = nearest
    sizes = numpy_helper.from_array(np.array([*xshape[:2], *size], np.int64), "sizes")
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], **attrs)
    return op_then_relu_model(path, node, xshape, [sizes])


@pytest.mark.parametrize("case", list(CASES))
def test_resize_matches_onnxruntime(case, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    mode, coord, nearest, xshape, size = CASES[case]
    path = _model(tmp_path / "resize.onnx", mode, coord, nearest, xshape, size)
    art = edgecompile.compile(path, output=tmp_path / "art")
    x = np.random.default_rng(3).standard_normal(xshape).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = edgecompile.load(art).run({"x": x})["z"]
    assert got.shape == ref.shape == (*xshape[:2], *size)
    np.testing.assert_allclose(got, ref, rtol=0, atol=(1e-5 if mode == "linear" else 0) * float(np.abs(ref).max()))
    names = [k["name"] for k in json.loads((art / "manifest.json").read_text())["kernels"]]
    assert any("resize_rows" in n for n in names) and not any("resize2d" in n for n in names), names
