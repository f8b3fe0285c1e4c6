"""A real text recogniser nobody here made, in CI at reduced size: PaddleOCR's PP-OCRv4 recogniser
as ``rapidocr-onnxruntime`` ships it (a Paddle2ONNX export at opset 12, weights in ``Constant``
nodes, shape arithmetic that folds only in rounds: what real exports contain), a conv backbone,
attention neck and CTC head, reading lines of the Zen of Python rendered in matplotlib's fonts.
The full zoo run is ``examples/real_zoo/run.py --models ppocrv4-rec``.

``scripts/test.sh`` installs ``rapidocr-onnxruntime`` with ``--no-deps`` (its declared dependencies
pull OpenCV, which loading the ONNX file does not need); without it this module skips."""

from __future__ import annotations

import importlib.util

import pytest
from helpers import assert_close, zoo_case

if importlib.util.find_spec("rapidocr_onnxruntime") is None:
    pytest.skip(
        "rapidocr-onnxruntime is not installed (pip install --no-deps rapidocr-onnxruntime==1.4.4)",
        allow_module_level=True,
    )
pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")

from real_zoo.models import OCR_HEIGHT, OCR_WIDTH, ctc_text, ppocr_rec  # noqa: E402

import edgecompile  # noqa: E402

SHAPES = {"x": (1, 3, OCR_HEIGHT, OCR_WIDTH)}


@pytest.fixture(scope="module")
def ocr(tmp_path_factory):
    """The model, 12 calibration crops (4 lines in 3 fonts), 6 held-out crops and ORT fp32's outputs."""
    zm = ppocr_rec()
    held, tmp = zm.held_out[::9], tmp_path_factory.mktemp("ocr")
    refs, calib = zoo_case(zm, held, zm.calib[::6], tmp)
    return zm, held, refs, calib, tmp


def test_the_fp32_build_reads_what_onnx_runtime_reads(ocr):
    """The opset-12 file is upgraded, its shape arithmetic folded, and the probabilities match ORT's
    within the float tolerance; the decoded texts are the same, and not empty."""
    zm, held, refs, _calib, tmp = ocr
    m = edgecompile.load(edgecompile.compile(zm.onnx, output=tmp / "fp32", input_shapes=SHAPES))
    assert m.manifest["source"]["opset_shipped"] == 12
    for feed, ref in zip(held, refs):
        got = m.run(feed)[zm.output]
        assert_close(ref, got)
        assert ctc_text(got) == ctc_text(ref) and len(ctc_text(ref)) >= 5


def test_int8_reads_the_same_text(ocr):
    """Calibrated on 12 crops, the default int8 build decodes every held-out crop to ORT fp32's
    text. Measured (Zen 4 EPYC, the full zoo: 75 calibration crops, 57 held out): every int8 recipe,
    integer-only too, 100% of characters; ORT's quantize_dynamic 0.3%. (The integer-only build is
    left to the zoo run: a minute of CI for what the DINOv2 and MiniLM tests already cover.)"""
    zm, held, refs, calib, tmp = ocr
    m = edgecompile.load(
        edgecompile.compile(zm.onnx, output=tmp / "int8", input_shapes=SHAPES, recipe="int8", calib=calib)
    )
    for feed, ref in zip(held, refs):
        assert ctc_text(m.run(feed)[zm.output]) == ctc_text(ref)
