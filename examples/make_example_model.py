"""Write examples/tiny_bert.onnx (a 2-layer BERT-style encoder with seeded weights, dynamic batch
and sequence) and examples/tiny_bert_inputs.npz (one tokenized batch of 1x32).

Needs torch; the outputs are committed, so the quick start does not."""

from pathlib import Path

import numpy as np
import torch
from models import BertStyleEncoder, export_onnx

here = Path(__file__).parent
model = BertStyleEncoder().eval()
ids = torch.randint(0, 1000, (1, 32), generator=torch.Generator().manual_seed(1))
mask = torch.ones(1, 32, dtype=torch.int64)
mask[:, 28:] = 0
export_onnx(
    model,
    (ids, mask),
    here / "tiny_bert.onnx",
    ["input_ids", "attention_mask"],
    ["last_hidden_state", "pooled"],
    dynamo=False,
    dynamic={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
)
np.savez(here / "tiny_bert_inputs.npz", input_ids=ids.numpy(), attention_mask=mask.numpy())
print("wrote", here / "tiny_bert.onnx", "and", here / "tiny_bert_inputs.npz")
