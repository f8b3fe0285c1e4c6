"""The fp16 recipe on TVM targets: float16 matmuls with float32 accumulation. Checked against ONNX
Runtime fp32 on the CPU (tolerance 1e-2 of the output range: fp16 keeps 11 significant bits, and
the example's activations pass ~10 rounded matmul inputs), and as half-precision CUDA kernels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import EXAMPLE_INPUTS, EXAMPLE_ONNX, EXAMPLE_SHAPES, assert_close, ort_run

import edgecompile
from edgecompile.errors import RecipeError


def test_fp16_matches_onnxruntime_fp32_within_half_precision(tmp_path):
    art = edgecompile.compile(EXAMPLE_ONNX, "native", tmp_path / "fp16", input_shapes=EXAMPLE_SHAPES, recipe="fp16")
    feeds = dict(np.load(EXAMPLE_INPUTS))
    ref = ort_run(EXAMPLE_ONNX, feeds)
    got = edgecompile.load(art).run(feeds)
    errors = {name: assert_close(ref[name], got[name], rel=1e-2) for name in ref}
    # and it really computed in half precision: not bit-identical to an fp32 build
    fp32_art = edgecompile.compile(EXAMPLE_ONNX, "native", tmp_path / "fp32", input_shapes=EXAMPLE_SHAPES)
    fp32 = edgecompile.load(fp32_art).run(feeds)
    assert any(not np.array_equal(fp32[n], got[n]) for n in got) and max(errors.values()) > 1e-5
    # the matmul weights are stored in float16 (embeddings and LayerNorm parameters stay float32)
    weights = [json.loads((a / "manifest.json").read_text())["weights_bytes"] for a in (art, fp32_art)]
    assert weights[0] < 0.8 * weights[1]


def test_fp16_cuda_kernels_are_half_precision(tmp_path):
    art = edgecompile.compile(EXAMPLE_ONNX, "cuda-sm90", tmp_path / "cu", input_shapes=EXAMPLE_SHAPES, recipe="fp16")
    library = (art / "model.so").read_bytes()
    assert b"half* __restrict__" in library  # fp16 operands in the matmul kernels
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["recipe"]["parts"][0]["preset"] == "fp16" and manifest["device_code"]


def test_fp16_with_int8_is_core_ml_only(tmp_path):
    with pytest.raises(RecipeError, match="int8 with fp16 activations is a Core ML recipe"):
        edgecompile.compile(
            EXAMPLE_ONNX, "native", tmp_path / "o", input_shapes=EXAMPLE_SHAPES, recipe="fp16+int8", calib=None
        )
