"""Factorizing one linear layer ``y = x W`` (``W``: [in, out]) as ``y ~ (x P) Q``, ``P``: [in, r],
``Q``: [r, out], so it costs ``r (in + out)`` multiply-adds per token instead of ``in * out``.

- Plain SVD (no calibration data): ``W = U S V^T``, ``P = U_r S_r^(1/2)``, ``Q = S_r^(1/2) V_r^T``;
  optimal for ``||W - P Q||_F``, which is not what matters.
- Whitened SVD (SVD-LLM / DRONE): with the inputs' second moment ``C = sum_t x_t x_t^T = L L^T``
  (Cholesky), the output error over the calibration tokens is ``||X (W - W')||_F = ||L^T (W - W')||_F``,
  so the SVD of ``M = L^T W`` truncated at ``r`` is optimal for the *output* error, and dropping
  singular value ``s_i`` costs exactly ``s_i^2``: the spectrum is a calibrated error meter used by
  rank selection. ``P = L^-T U_r S_r^(1/2)`` (a triangular solve), ``Q = S_r^(1/2) V_r^T``. When ``C``
  is singular or ill-conditioned, a ridge of ``1e-6 * tr(C) / n`` is added; if Cholesky still
  fails, ``C``'s eigendecomposition with eigenvalues clamped at that ridge stands in for ``L``.
- Refit (:func:`refit_outer`): once the upstream layers are factorized too, this layer's inputs
  ``X'`` differ from the float model's ``X``; ``Q = argmin ||X W - X' P Q||`` by least squares from
  the accumulated ``X'^T X'`` and ``X'^T X`` (SVD-LLM's local update, closed form).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RIDGE = 1e-6


class SecondMoment:
    """Streams activations ``[..., n]`` into ``sum x x^T`` (float64) and, optionally with a
    second stream, the cross moment; an observer for :func:`edgecompile.calibrate.capture.observe`."""

    def __init__(self):
        self.c: np.ndarray | None = None
        self.tokens = 0

    def observe(self, x: np.ndarray) -> None:
        x = x.reshape(-1, x.shape[-1]).astype(np.float64)
        self.c = x.T @ x if self.c is None else self.c + x.T @ x
        self.tokens += x.shape[0]


def whitening(c: np.ndarray) -> np.ndarray:
    """``L`` with ``L L^T ~ C`` (lower-triangular Cholesky factor, ridge-regularized)."""
    n = c.shape[0]
    ridge = RIDGE * max(float(np.trace(c)) / n, 1e-30)
    try:
        return np.linalg.cholesky(c + ridge * np.eye(n))
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh((c + c.T) / 2)
        return v * np.sqrt(np.maximum(w, ridge))  # not triangular; L L^T = C clamped


@dataclass
class Spectrum:
    """The SVD of one layer's (whitened) weight, ready to cut at any rank."""

    u: np.ndarray  # [in, k]
    s: np.ndarray  # [k] singular values, descending
    vt: np.ndarray  # [k, out]
    lw: np.ndarray | None  # whitening factor L, None for plain SVD

    @property
    def energy(self) -> np.ndarray:
        """Cumulative fraction of ``sum s_i^2`` kept by ranks 1..k."""
        e = np.cumsum(self.s**2)
        return e / e[-1] if e[-1] > 0 else np.ones_like(e)

    def error(self, r: int) -> float:
        """Relative output error on the calibration tokens at rank ``r``: ``sqrt(sum_{i>r} s_i^2 / sum s_i^2)``
        (plain SVD: the relative weight error)."""
        total = float(np.sum(self.s**2))
        return float(np.sqrt(np.sum(self.s[r:] ** 2) / total)) if total > 0 else 0.0

    def factors(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """``(P [in, r], Q [r, out])`` at rank ``r``, the singular values split evenly."""
        root = np.sqrt(self.s[:r])
        p = self.u[:, :r] * root
        if self.lw is not None:
            p = _solve_lt(self.lw, p)
        return p, root[:, None] * self.vt[:r]


def _solve_lt(lw: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``L^-T B``."""
    try:
        from scipy.linalg import solve_triangular

        if np.allclose(lw, np.tril(lw)):
            return solve_triangular(lw, b, trans="T", lower=True)
    except ImportError:  # scipy is optional: a general solve does the same
        pass
    return np.linalg.solve(lw.T, b)


def spectrum(w: np.ndarray, c: np.ndarray | None = None) -> Spectrum:
    """The (whitened, when the input second moment ``c`` is given) SVD of ``w`` [in, out]."""
    w = w.astype(np.float64)
    if c is None:
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        return Spectrum(u, s, vt, None)
    lw = whitening(c)
    u, s, vt = np.linalg.svd(lw.T @ w, full_matrices=False)
    return Spectrum(u, s, vt, lw)


def refit_outer(p: np.ndarray, w: np.ndarray, c_new: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """The least-squares ``Q`` for ``X' P Q ~ X W``: ``(P^T C' P)^-1 P^T (X'^T X) W``, with
    ``C' = X'^T X'`` and ``cross = X'^T X``."""
    g = p.T @ c_new @ p
    g += RIDGE * max(float(np.trace(g)) / len(g), 1e-30) * np.eye(len(g))
    return np.linalg.solve(g, p.T @ cross @ w.astype(np.float64))


def breakeven_rank(n_in: int, n_out: int) -> float:
    """``r* = in * out / (in + out)``: below it the factorized layer has fewer parameters and MACs."""
    return n_in * n_out / (n_in + n_out)


def round_rank(r: float, multiple: int, n_in: int, n_out: int) -> int:
    """``r`` rounded to the nearest multiple (at least one multiple), at most ``min(in, out)``."""
    return int(max(multiple, min(min(n_in, n_out), multiple * round(r / multiple))))
