"""A small ViT trained on scikit-learn's ``digits`` (8x8 grey images of handwritten digits, 1,797
samples shipped inside scikit-learn): the real-data accuracy gate of the int8 recipes.

Fixed split (seed 0, stratified): 1,197 train images (of which the first 128 are also the
calibration set) and 600 held-out test images. Pixels are scaled to [0, 1]. The model is
``examples.models.TinyViT`` with 2x2 patches (16 tokens + class token), hidden 64, 2 pre-norm
layers, 4 heads, FFN 128; 40 epochs of AdamW take a few seconds on one CPU core.
"""

from __future__ import annotations

import numpy as np

CALIB = 128


def splits(seed: int = 0) -> dict[str, np.ndarray]:
    """``x_train, y_train, x_test, y_test, x_calib`` as float32 NCHW arrays and int labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=600, random_state=seed, stratify=d.target)
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte, "x_calib": xtr[:CALIB]}


def train(data: dict, epochs: int = 40, seed: int = 0):
    """The trained ViT (eval mode)."""
    import torch
    from models import TinyViT

    torch.manual_seed(seed)
    model = TinyViT(image=8, patch=2, channels=1, hidden=64, layers=2, heads=4, ffn=128, classes=10, seed=seed)
    return fit(model, data, epochs, lr=3e-3, batch=64, seed=seed)


def fit(model, data: dict, epochs: int, lr: float, batch: int, seed: int = 0):
    """``model`` trained on ``data``'s train split (AdamW, cosine schedule), in eval mode."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"]).long()
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    return model.eval()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(logits).argmax(-1) == labels).mean() * 100)
