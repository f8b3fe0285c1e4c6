"""SmoothQuant for the int8 rewrite: per input channel factors that move the outlier channels of a
linear layer's input into its weights (:func:`smoothing_factors`)."""

from __future__ import annotations

import numpy as np

from edgecompile.ir.layers import Layer
from edgecompile.ir.ops import const_array

ALPHAS = (0.25, 0.5, 0.75, 0.9, 1.0)  # the strengths smooth=auto weighs against no smoothing
SMOOTH_GAIN = 2.0  # smooth=auto smooths where the predicted output noise falls at least this much
SMOOTH_MIN_ROWS = 512  # ... and calibration saw this many rows (tokens) of the tensor


def smoothing_factors(stats, readers: list[Layer], alpha: float | None) -> np.ndarray | None:
    """SmoothQuant (Xiao et al., 2023): per input channel ``j`` of the linear layers reading one
    tensor, ``sigma_j = max|x_j|^alpha / max|W_j|^(1 - alpha)``; the layers read ``x / sigma`` (one
    int8 scale) and use weights ``diag(sigma) W``, the same product in float. Real transformers
    have a few channels 10-50x larger than the rest (all-MiniLM-L6-v2's LayerNorm outputs: 30
    against a spread of 0.6), so one per-tensor scale leaves the other channels a few levels;
    dividing them out moves the range into the weights, quantized per output channel.

    ``alpha=None`` (``smooth=auto``) picks, per tensor, the strength in :data:`ALPHAS` with the
    least predicted output noise, if it beats no smoothing (None) by :data:`SMOOTH_GAIN` and
    calibration saw :data:`SMOOTH_MIN_ROWS` rows: activation rounding
    ``(T/127)^2/12 * sum_j sigma_j^2 W_jc^2`` (``T = max_j max|x_j| / sigma_j``) plus weight
    rounding ``(max_j |sigma_j W_jc| / 127)^2 / 12 * sum_j E[x_j^2] / sigma_j^2``, summed over the
    outputs ``c``, from the calibration statistics ``stats``
    (:class:`edgecompile.calibrate.capture.ChannelStats`). On MiniLM that is 0.9-1.0 for most
    tensors; on a model without outlier channels, none."""
    w = np.concatenate([const_array(layer.binding.value.args[1]) for layer in readers], axis=1).astype(np.float64)
    wmax = np.maximum(np.abs(w).max(axis=1), 1e-8)
    amax = np.maximum(stats.max.astype(np.float64), 1e-8)

    def sigma_of(a: float) -> np.ndarray:
        sigma = amax**a / wmax ** (1 - a)
        return np.clip(sigma / np.exp(np.log(sigma).mean()), 1e-4, 1e4)  # geometric mean 1

    if alpha is not None:
        return sigma_of(alpha)
    if stats.count < SMOOTH_MIN_ROWS:  # a channel's maximum over a few tokens says little
        return None
    ms, w2 = stats.mean_square, w**2

    def noise(sigma: np.ndarray) -> float:
        t = (amax / sigma).max()
        act = (t / 127) ** 2 / 12 * (sigma**2 @ w2).sum()
        step_w = np.abs(sigma[:, None] * w).max(axis=0) / 127
        return float(act + (step_w**2 / 12).sum() * (ms / sigma**2).sum())

    best = min((sigma_of(a) for a in ALPHAS), key=noise)
    # smoothing fits every channel's range to what calibration saw, leaving none of the headroom
    # the largest channel gave the others: only worth it for a clear gain (3 dB predicted)
    return best if noise(best) < noise(np.ones_like(amax)) / SMOOTH_GAIN else None
