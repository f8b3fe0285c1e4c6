"""Small transformer models used by the example, the tests and the benchmarks.

Sizes are parameters: the defaults are tiny (fast to compile in CI); the benchmarks build
MiniLM-L6- and BERT-base-sized encoders from the same classes. Weights are seeded, so every
export is reproducible.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class BertStyleEncoder(nn.Module):
    """Hand-written BERT encoder: embeddings, post-norm blocks with masked attention, pooled output.

    Inputs ``input_ids`` and ``attention_mask`` (int64, [batch, seq]); outputs
    ``last_hidden_state`` [batch, seq, hidden] and ``pooled`` [batch, hidden].
    """

    def __init__(self, vocab=1000, hidden=64, layers=2, heads=4, ffn=128, max_pos=128, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.heads = heads
        self.word = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(max_pos, hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.blocks = nn.ModuleList(_BertBlock(hidden, heads, ffn) for _ in range(layers))
        self.pool = nn.Linear(hidden, hidden)

    def forward(self, input_ids, attention_mask):
        seq = input_ids.shape[1]
        pos = torch.arange(seq, device=input_ids.device).unsqueeze(0)
        h = self.emb_norm(self.word(input_ids) + self.pos(pos))
        bias = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * -10000.0
        for blk in self.blocks:
            h = blk(h, bias)
        return h, torch.tanh(self.pool(h[:, 0]))


class _BertBlock(nn.Module):
    def __init__(self, hidden, heads, ffn):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = (nn.Linear(hidden, hidden) for _ in range(3))
        self.o = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden, eps=1e-12)
        self.up = nn.Linear(hidden, ffn)
        self.down = nn.Linear(ffn, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x, bias):
        b, s, d = x.shape
        hd = d // self.heads

        def split(t):
            return t.view(b, s, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + bias
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, d)
        x = self.norm1(x + self.o(ctx))
        return self.norm2(x + self.down(nn.functional.gelu(self.up(x))))


class TinyViT(nn.Module):
    """ViT: conv patch embedding, class token, pre-norm blocks, classification head."""

    def __init__(self, image=32, patch=8, channels=3, hidden=64, layers=2, heads=4, ffn=128, classes=10, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.patch = nn.Conv2d(channels, hidden, patch, stride=patch)
        n = (image // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, n + 1, hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, ffn, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, pixel_values):
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.encoder(x))[:, 0])


class EncoderStack(nn.Module):
    """``nn.TransformerEncoderLayer`` stack, pre-norm (``norm_first=True``) or post-norm."""

    def __init__(self, hidden=64, layers=2, heads=4, ffn=128, norm_first=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        layer = nn.TransformerEncoderLayer(hidden, heads, ffn, dropout=0.0, batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(x)


def export_onnx(
    module: nn.Module, args: tuple, path, input_names, output_names, dynamo: bool, dynamic: dict | None = None
) -> None:
    """Export with the TorchScript exporter (opset 17) or the dynamo exporter (opset 18,
    weights in external data, as it writes by default for files)."""
    module.eval()
    common = {"input_names": input_names, "output_names": output_names, "dynamo": dynamo}
    if dynamo:
        shapes = None
        if dynamic:
            shapes = {
                n: {ax: torch.export.Dim(f"{name}_{n}", max=512) for ax, name in axes.items()}
                for n, axes in dynamic.items()
            }
        torch.onnx.export(
            module, args, str(path), **common, opset_version=18, dynamic_shapes=shapes, external_data=True
        )
    else:
        torch.onnx.export(module, args, str(path), **common, opset_version=17, dynamic_axes=dynamic)
