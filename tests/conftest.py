"""Shared fixtures: the example model compiled once, its inputs, and the digits ViT trained once.
Plain helpers live in ``tests/helpers.py`` (importable as ``helpers``: pytest puts this folder on the path
when it loads this file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import EXAMPLE_INPUTS, EXAMPLE_ONNX, EXAMPLE_SHAPES


@pytest.fixture(scope="session")
def example_artifact(tmp_path_factory) -> Path:
    """The bundled example compiled once for the host."""
    import edgecompile

    out = tmp_path_factory.mktemp("artifacts") / "tiny_bert"
    return edgecompile.compile(EXAMPLE_ONNX, target="native", output=out, input_shapes=EXAMPLE_SHAPES)


@pytest.fixture(scope="session")
def example_feeds() -> dict:
    data = np.load(EXAMPLE_INPUTS)
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """The digits ViT trained here (a few seconds), exported, with its 128 calibration images:
    ``(data, onnx_path, calib_npz, tmp_dir)``."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from digits_vit.digits import splits, train
    from models import export_onnx

    tmp = tmp_path_factory.mktemp("digits")
    data = splits()
    model = train(data)
    onnx_path = tmp / "digits_vit.onnx"
    export_onnx(model, (torch.from_numpy(data["x_test"][:1]),), onnx_path, ["pixel_values"], ["logits"], dynamo=False)
    calib = tmp / "calib.npz"
    np.savez(calib, pixel_values=data["x_calib"][:, None])  # [N, 1, 1, 8, 8]: one sample per row
    return data, onnx_path, calib, tmp
