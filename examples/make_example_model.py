"""Write examples/tiny_bert.onnx (a 2-layer BERT-style encoder with seeded weights, dynamic batch
and sequence), examples/tiny_bert_inputs.npz (one tokenized batch of 1x32) and
examples/tiny_bert_calib.npz (64 calibration samples for the int8 recipe: random token ids with
padded tails of random length, stacked along a leading sample axis).

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
g = torch.Generator().manual_seed(2)
calib_ids = torch.randint(0, 1000, (64, 1, 32), generator=g)
calib_mask = torch.ones(64, 1, 32, dtype=torch.int64)
for i, n in enumerate(torch.randint(8, 33, (64,), generator=g).tolist()):
    calib_mask[i, :, n:] = 0
np.savez(here / "tiny_bert_calib.npz", input_ids=calib_ids.numpy(), attention_mask=calib_mask.numpy())
print("wrote", here / "tiny_bert.onnx", here / "tiny_bert_inputs.npz", "and", here / "tiny_bert_calib.npz")
