"""Observers: the clipping threshold ``T`` of a tensor from streamed batches (scale = T / 127).

Quantization is symmetric, so every observer looks at ``|x|``. Memory is bounded: each observer
keeps a running max and a fixed-size histogram of ``|x|`` (:data:`BINS` bins over ``[0, R]``);
when a batch exceeds ``R``, ``R`` doubles and adjacent bins merge, so counts stay exact and only
resolution is lost. Thresholds:

- ``minmax``: the largest ``|x|`` seen.
- ``percentile``: the ``p``-th percentile of ``|x|`` (default 99.99), from the histogram.
- ``mse``: the threshold minimising the expected squared quantization error over the histogram
  (rounding noise ``s^2/12`` inside, distance to the clip value outside, as in ACIQ), searched
  over every 8th bin edge.
- ``entropy``: TensorRT's KL-divergence calibration: the threshold whose 128-level quantized
  distribution is closest (KL) to the clipped reference distribution.
"""

from __future__ import annotations

import numpy as np

BINS = 2048
LEVELS = 128  # int8 magnitudes 0..127
OBSERVERS = ("minmax", "percentile", "mse", "entropy")


def rounding_noise(t: float) -> float:
    """The mean squared rounding error of int8 with clipping value ``t`` (step ``t / 127``,
    uniform within a step): ``(t / 127)^2 / 12``."""
    s = t / (LEVELS - 1)
    return s * s / 12


class Observer:
    """Streams batches of one tensor; :meth:`threshold` gives the clipping value."""

    def __init__(self, method: str = "minmax", percentile: float = 99.99):
        if method not in OBSERVERS:
            raise ValueError(f"unknown observer {method!r}; choose one of {', '.join(OBSERVERS)}")
        self.method = method
        self.percentile = percentile
        self.max = 0.0
        self.range = 0.0
        self.hist = np.zeros(BINS, np.int64)

    def observe(self, x: np.ndarray) -> None:
        a = np.abs(np.asarray(x, np.float32)).ravel()
        if a.size == 0:
            return
        m = float(a.max())
        if not np.isfinite(m):
            raise ValueError("the tensor holds inf or NaN")
        self.max = max(self.max, m)
        if self.method == "minmax":
            return
        if self.range == 0.0:
            self.range = m if m > 0 else 1.0
        while m > self.range:  # double the range, merging bin pairs into the lower half
            merged = self.hist.reshape(-1, 2).sum(axis=1)
            self.hist = np.concatenate([merged, np.zeros(BINS // 2, np.int64)])
            self.range *= 2
        idx = np.minimum((a * (BINS / self.range)).astype(np.int64), BINS - 1)
        self.hist += np.bincount(idx, minlength=BINS)

    def threshold(self) -> float:
        if self.max == 0.0:
            return 1e-8  # an all-zero tensor: any scale is exact
        if self.method == "minmax":
            return self.max
        t = {"percentile": self._percentile, "mse": self._mse, "entropy": self._entropy}[self.method]()
        return float(min(max(t, 1e-8), self.max))

    def _centers(self) -> np.ndarray:
        return (np.arange(BINS) + 0.5) * (self.range / BINS)

    def _percentile(self) -> float:
        cdf = np.cumsum(self.hist) / max(1, self.hist.sum())
        i = int(np.searchsorted(cdf, self.percentile / 100.0))
        return (i + 1) * self.range / BINS

    def expected_error(self, t: float) -> float:
        """The mean squared error per element of int8 at clipping value ``t``: rounding noise
        ``s^2/12`` inside the range (uniform within a step, as ACIQ assumes), the squared distance
        to ``t`` outside, from the histogram (``minmax`` keeps none: rounding alone)."""
        total = float(self.hist.sum())
        if total == 0:
            return rounding_noise(t)
        v, n = self._centers(), self.hist.astype(np.float64)
        outside = v > t
        return (float(n[~outside].sum()) * rounding_noise(t) + float(np.dot(n[outside], (v[outside] - t) ** 2))) / total

    def _mse(self) -> float:
        edges = [edge * self.range / BINS for edge in range(8, BINS + 1, 8)]
        return edges[int(np.argmin([self.expected_error(t) for t in edges]))]

    def _entropy(self) -> float:
        hist = self.hist.astype(np.float64)
        best, best_i = np.inf, BINS
        for i in range(LEVELS, BINS + 1, 4):
            p = hist[:i].copy()
            p[-1] += hist[i:].sum()  # outliers clip into the last bin
            nz = p > 0
            # quantize the i reference bins into LEVELS levels, spreading each level's mass evenly
            # over the level's non-empty bins
            groups = np.minimum((np.arange(i) * LEVELS) // i, LEVELS - 1)
            mass = np.bincount(groups, weights=hist[:i], minlength=LEVELS)
            support = np.bincount(groups, weights=nz.astype(np.float64), minlength=LEVELS)
            q = np.where(nz, mass[groups] / np.maximum(support[groups], 1), 0.0)
            ps, qs = p.sum(), q.sum()
            if ps == 0 or qs == 0:
                continue
            pn, qn = p[nz] / ps, q[nz] / qs
            kl = float(np.sum(pn * np.log(pn / np.maximum(qn, 1e-12))))
            if kl < best:
                best, best_i = kl, i
        return (best_i + 0.5) * self.range / BINS
