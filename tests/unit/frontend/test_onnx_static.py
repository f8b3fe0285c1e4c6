"""Static-shape specialization folds exporter shape arithmetic without changing results."""

from __future__ import annotations

import numpy as np
import onnx
from helpers import EXAMPLE_ONNX, ort_run

from edgecompile.frontend.onnx_import import read_onnx, resolve_input_specs
from edgecompile.frontend.onnx_static import MAX_FOLD_ELEMENTS, specialize


def test_shape_arithmetic_is_folded_and_results_unchanged(tmp_path, example_feeds):
    model = read_onnx(EXAMPLE_ONNX)
    specs = resolve_input_specs(model, {"input_ids": (1, 32), "attention_mask": (1, 32)})
    folded = specialize(model, specs)
    ops = [n.op_type for n in folded.graph.node]
    assert "Shape" not in ops and "Constant" not in ops
    assert len(folded.graph.node) < len(model.graph.node) * 0.7
    # Weights are never duplicated: every new initializer is small.
    old = {t.name for t in model.graph.initializer}
    new = [t for t in folded.graph.initializer if t.name not in old]
    assert new and all(int(np.prod(t.dims)) <= MAX_FOLD_ELEMENTS for t in new)
    onnx.checker.check_model(folded)
    path = tmp_path / "folded.onnx"
    onnx.save(folded, path)
    ref, got = ort_run(EXAMPLE_ONNX, example_feeds), ort_run(path, example_feeds)
    for k in ref:
        np.testing.assert_allclose(ref[k], got[k], rtol=1e-5, atol=1e-6)  # ORT fuses differently
