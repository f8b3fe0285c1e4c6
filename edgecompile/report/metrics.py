"""Evaluation data and task metrics of ``edgecompile report``.

``--eval`` is an ``.npz`` with one array per model input stacked along a leading sample axis (as
``--calib``) and, for label metrics, a ``labels`` array of one label per sample. A metric scores
each sample (higher is better) so that a recipe's drop against fp32 is a paired difference with a
bootstrap interval:

- ``top1``: 100 if the first output's argmax is the label, else 0 (needs ``labels``);
- ``cosine``: cosine similarity of the first output to the fp32 model's, per sample;
- ``mse``: minus the mean squared error to the fp32 model's first output (so higher is better);
- ``custom:module:function``: ``function(output, label_or_None, reference_output) -> float``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgecompile.errors import CalibrationError, EdgeCompileError

BUILTIN = ("top1", "cosine", "mse")


class MetricError(EdgeCompileError):
    """A metric that cannot be used."""


def read_eval(path: str | Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The input arrays (leading sample axis) and the labels (or None) of an eval ``.npz``."""
    from edgecompile.calibrate.data import read_npz

    if not Path(path).is_file():
        raise CalibrationError(f"evaluation data not found: {path}")
    arrays = read_npz(Path(path))
    return arrays, arrays.pop("labels", None)


def eval_samples(arrays: dict[str, np.ndarray], labels: np.ndarray | None, specs: list) -> list[dict]:
    """The checked samples of :func:`read_eval`'s arrays for the model's input ``specs``."""
    from edgecompile.calibrate.data import load_samples

    samples = load_samples(arrays, specs)
    if labels is not None and len(labels) != len(samples):
        raise CalibrationError(f"evaluation data: {len(labels)} labels for {len(samples)} samples")
    return samples


def scorer(spec: str, labels: np.ndarray | None) -> Callable[[np.ndarray, int, np.ndarray], float]:
    """``score(output, sample_index, fp32_output)`` for the metric ``spec``."""
    if spec == "top1":
        if labels is None:
            raise MetricError("--metric top1 needs a 'labels' array in the --eval file")
        return lambda out, i, _ref: 100.0 * float(np.argmax(out.reshape(-1)) == int(labels[i]))
    if spec == "cosine":

        def cos(out, _i, ref):
            a, b = out.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
            return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))

        return cos
    if spec == "mse":
        return lambda out, _i, ref: -float(np.mean((out.astype(np.float64) - ref) ** 2))
    if spec.startswith("custom:"):
        parts = spec.split(":")
        if len(parts) != 3:
            raise MetricError(f"--metric custom takes custom:module:function, got {spec!r}")
        try:
            fn = getattr(importlib.import_module(parts[1]), parts[2])
        except (ImportError, AttributeError) as e:
            raise MetricError(f"--metric {spec}: {e}") from e
        return lambda out, i, ref: float(fn(out, None if labels is None else labels[i], ref))
    raise MetricError(f"unknown metric {spec!r}: choose {', '.join(BUILTIN)} or custom:module:function")


def bootstrap_drop(base: np.ndarray, scores: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% interval of ``mean(base) - mean(scores)`` by resampling the samples (paired)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), (n, len(base)))
    drops = base[idx].mean(axis=1) - scores[idx].mean(axis=1)
    lo, hi = np.percentile(drops, [2.5, 97.5])
    return float(lo), float(hi)
