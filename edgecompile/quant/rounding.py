"""Rounding a linear layer's weights to int8: to nearest, or GPTQ's error-compensating order.

Both give int8 weights ``q`` and one scale per output channel, ``s[c] = max_k |W[k, c]| / 127``,
so the kernels and the rescale are the same; they differ in which integer each weight becomes.

GPTQ (``int8:rounding=gptq``; Frantar et al., 2022, after Optimal Brain Quantization) minimises the
layer's output error on the calibration inputs, ``||X W - X q s||^2``, instead of each weight's
own: the input rows are rounded one at a time (largest ``E[x_k^2]`` first) and the error of each is
spread over the rows not yet rounded through the inverse of the input's second moment
``H = E[x x^T]`` (its Cholesky factor, updated a block of rows at a time). With ``H`` diagonal
(uncorrelated inputs) nothing is spread and it is rounding to nearest. ``H`` is damped by 1% of its
mean diagonal, and an input channel that was zero throughout calibration keeps its weights rounded
to nearest. Decision: a layer whose calibration saw fewer than :data:`ROWS_PER_INPUT` input rows per input
channel is rounded to nearest (with fewer rows than channels ``H`` cannot even have full rank: the
weights would be fitted to the few rows seen); :meth:`InputMoments.rounded` checks it.

Decision: AdaRound (learned rounding by gradient descent on the same objective) is not built: it
takes thousands of gradient steps per layer over the calibration activations (minutes per layer
on a 2-core machine for a BERT-base FFN), where GPTQ's closed-form update takes well under a
second; both target the same error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DAMPING = 0.01  # of H's mean diagonal, added to its diagonal
BLOCK = 128  # input rows rounded between two updates of the rows after them
ROWS_PER_INPUT = 2  # calibration rows per input channel GPTQ needs (module docstring)


@dataclass(frozen=True)
class InputMoments:
    """What calibration measured of a linear layer's input for rounding its weights: the
    per-channel mean (``int8:bias_correction=on``) and the second moment ``E[x x^T]`` over the
    calibration rows (``int8:rounding=gptq``); either may be None."""

    mean: np.ndarray | None = None
    second: np.ndarray | None = None
    rows: int = 0  # calibration rows (tokens, pixels) the second moment sums
    # GPTQ's rounding per (layer reading this input, smoothed or not): a calibration rewrites its
    # model several times (errors, sensitivity, budget, ranged buckets) with the same weights; a
    # layer's input is divided by the calibration's one smoothing or, read already int8, by none
    _rounded: dict = field(default_factory=dict, compare=False, repr=False)

    def rounded(self, layer: str, w: np.ndarray, sigma: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``layer``'s weights ``w`` (already multiplied by the smoothing ``sigma``, the input then
        being ``x / sigma``) rounded by :func:`round_gptq`, once per layer and smoothing (the
        weights and ``sigma`` are the calibration's); by :func:`round_nearest` without a second
        moment or with too few rows (:data:`ROWS_PER_INPUT`)."""
        if self.second is None or self.rows < ROWS_PER_INPUT * w.shape[0]:
            return round_nearest(w)
        key = (layer, sigma is not None)
        if key not in self._rounded:
            second = self.second if sigma is None else self.second / np.outer(sigma, sigma)
            self._rounded[key] = round_gptq(w, second)
        return self._rounded[key]


def weight_scales(w: np.ndarray) -> np.ndarray:
    """One scale per output channel (column) of ``w`` ``[in, out]``: its largest ``|w|`` over 127
    (1 for an all-zero column)."""
    s = np.abs(w).max(axis=0) / 127.0
    return np.where(s > 0, s, 1.0).astype(np.float64)


def round_nearest(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``w`` ``[in, out]`` as int8 and its scales per output channel, each weight rounded to nearest."""
    s = weight_scales(w)
    return np.clip(np.rint(w / s), -127, 127).astype(np.int8), s


def round_gptq(w: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``w`` ``[in, out]`` as int8 and its scales per output channel (those of
    :func:`round_nearest`), rounded by GPTQ for inputs of second moment ``second`` ``[in, in]``
    (module docstring)."""
    s = weight_scales(w)
    work = np.asarray(w, np.float64).copy()
    h = np.asarray(second, np.float64).copy()
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    h[np.diag_indices_from(h)] += DAMPING * float(np.mean(np.diag(h)))
    order = np.argsort(-np.diag(h), kind="stable")
    work, h = work[order], h[np.ix_(order, order)]
    # the upper Cholesky factor U of H^-1 (H^-1 = U^T U): row k of U spreads row k's error
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    q = np.empty(work.shape, np.int8)
    live = ~dead[order]
    for start in range(0, len(work), BLOCK):
        stop = min(start + BLOCK, len(work))
        errors = np.zeros((stop - start, work.shape[1]))
        for k in range(start, stop):
            row = np.clip(np.rint(work[k] / s), -127, 127)
            q[k] = row
            if not live[k]:
                continue
            err = (work[k] - row * s) / u[k, k]
            work[k + 1 : stop] -= np.outer(u[k, k + 1 : stop], err)
            errors[k - start] = err
        work[stop:] -= u[start:stop, stop:].T @ errors
    out = np.empty_like(q)
    out[order] = q
    return out, s
