"""How far a rewritten model's outputs moved from the float model's on calibration samples: the
measure that accuracy budgets (``max_drop``) of the rewrite passes are checked against."""

from __future__ import annotations

import numpy as np


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def output_drop(ref: list[np.ndarray], got: list[np.ndarray]) -> dict:
    """``{"relative_l2", "drop"}`` (+ ``top1_changed``, ``prob_shift`` for a 2-D output: a
    classifier). ``drop`` is the larger of the fraction of samples whose top-1 class changed and
    the mean total-variation shift of the class probabilities (calibration images are often ones
    the model is sure of, so a top-1 count there underestimates held-out flips; the probability
    shift moves before any class flips); for other outputs, the relative L2 error."""
    rel = float(
        np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(ref, got)) / max(sum(np.sum(a**2) for a in ref), 1e-30))
    )
    result = {"relative_l2": round(rel, 6)}
    if ref[0].ndim == 2 and ref[0].shape[-1] >= 2:
        changed = float(np.mean([np.any(a.argmax(-1) != b.argmax(-1)) for a, b in zip(ref, got)]))
        tv = float(np.mean([0.5 * np.abs(_softmax(a) - _softmax(b)).sum(-1).mean() for a, b in zip(ref, got)]))
        result["top1_changed"] = round(changed, 4)
        result["prob_shift"] = round(tv, 5)
        result["drop"] = max(changed, tv)
    else:
        result["drop"] = rel
    return result
