"""A long-sequence ViT on the same real digits: images upsampled to ``size x size`` and one token
per pixel, so attention runs over ``size^2 + 1`` tokens (577 at the default 24): the model the
binary-hash attention pass is measured on (tests/unit/hashattn/test_hash_attention.py, benchmarks/hash_attention.py).

Same split as :mod:`digits`; ``examples.models.TinyViT`` with 1x1 patches, hidden 32, 2 layers,
2 heads, FFN 64; trained with AdamW. With the defaults (6 epochs, seed 0) it reaches 68.0% top-1
on the 600 test images (about 4 minutes on 2 busy cores); 12 epochs reach 79.5% (about 8 minutes).
"""

from __future__ import annotations

import numpy as np

SIZE = 24


def upsample(x: np.ndarray, size: int = SIZE) -> np.ndarray:
    """``[N, 1, 8, 8]`` images to ``[N, 1, size, size]`` (bilinear)."""
    import torch

    t = torch.nn.functional.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False)
    return t.numpy().astype(np.float32)


def long_splits(data: dict, size: int = SIZE) -> dict:
    """:func:`digits.splits`'s arrays with the images upsampled."""
    return {k: upsample(v, size) if k.startswith("x_") else v for k, v in data.items()}


def train_long(data: dict, epochs: int = 6, seed: int = 0, size: int = SIZE):
    """The trained long-sequence ViT (eval mode) on :func:`long_splits` data."""
    import torch
    from models import TinyViT

    from .digits import fit

    torch.manual_seed(seed)
    model = TinyViT(image=size, patch=1, channels=1, hidden=32, layers=2, heads=2, ffn=64, classes=10, seed=seed)
    return fit(model, data, epochs, lr=4e-3, batch=32, seed=seed)
