"""Learning the kernelized hash of one attention head from calibration Q and K (numpy).

EcoFormer's hash, post-training and untied (shared/research/hash_lowrank.md, A2-A3, A9):

1. queries and keys are L2-normalised; ``m`` anchors are k-means centres of both;
2. RBF features ``phi(x) = exp((x . a_j - 1) / sigma) - mu`` (``= exp(-|x - a_j|^2 / 2 sigma)``
   for unit vectors), ``sigma`` the mean squared distance to the anchors (frozen: static shapes),
   ``mu`` the mean feature, separately for queries and keys;
3. the target: for each calibration query, its ``topk`` keys by the real attention logits
   ``S_ij = +1``, its ``topk`` last ``S_ij = -1``, else 0; ``R = b S``;
4. bits one at a time (greedy KSH): ``h_q = sign(phi(q) a_q)``, ``h_k = sign(phi(k) a_k)``
   maximising ``h_q^T R h_k``, from a spectral start (the top singular pair of
   ``phi_q^T R phi_k``) refined by Adam on the ``tanh`` relaxation; whichever of the two has the
   higher binarised objective is kept, and ``R -= h_q h_k^T``.

The codes' similarity ``h_q . h_k`` then ranks keys as the logits do; :func:`fit_head` returns the
per-head parameters the rewrite bakes in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_QUERIES = 256  # calibration queries per sample used for the target (all keys are)
KMEANS_STEPS = 10


@dataclass
class HeadHash:
    anchors: np.ndarray  # [m, d], unit rows
    sigma: float
    mu_q: np.ndarray  # [m]
    mu_k: np.ndarray  # [m]
    w_q: np.ndarray  # [b, m]
    w_k: np.ndarray  # [b, m]
    key_bias: np.ndarray | None = None  # [d]: key j's weight is exp(k_j . key_bias) (None: 1)

    def key_weights(self, k: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        """``exp(k_j . key_bias - max)`` per key ``[..., N]`` (ones without a key bias), the max over
        the kept keys (``keep`` nonzero) and 0 for the others, as the compiled rewrite computes it."""
        if self.key_bias is None:
            return np.ones(k.shape[:-1])
        s = k.astype(np.float64) @ self.key_bias
        kept = np.ones(s.shape, bool) if keep is None else np.asarray(keep) != 0
        peak = np.where(kept, s, -np.inf).max(-1, keepdims=True)
        return np.where(kept, np.exp(np.where(kept, s - peak, 0.0)), 0.0)

    def codes(self, x: np.ndarray, side: str) -> np.ndarray:
        """Sign bits ``[..., b]`` (True: +1) of queries (``side="q"``) or keys."""
        mu, w = (self.mu_q, self.w_q) if side == "q" else (self.mu_k, self.w_k)
        return (features(x, self.anchors, self.sigma, mu) @ w.T) > 0


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x.astype(np.float64) ** 2).sum(-1, keepdims=True) + 1e-12)


def features(x: np.ndarray, anchors: np.ndarray, sigma: float, mu: np.ndarray | None = None) -> np.ndarray:
    """``[x / |x|, exp((x / |x| . a_j - 1) / sigma)] - mu``: the direction itself and its RBF
    features (so a bit can be a plain hyperplane on the direction, SimHash's optimum for angles,
    bent by the kernel where that ranks keys better)."""
    xn = normalise(x)
    f = np.concatenate([xn, np.exp((xn @ anchors.T - 1.0) / sigma)], axis=-1)
    return f if mu is None else f - mu


def _kmeans(x: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    centres = x[rng.choice(len(x), size=min(m, len(x)), replace=False)]
    for _ in range(KMEANS_STEPS):
        nearest = np.argmax(x @ centres.T, axis=1)  # unit vectors: the largest dot is the nearest
        for j in range(len(centres)):
            pts = x[nearest == j]
            if len(pts):
                centres[j] = normalise(pts.mean(0))
    return centres


def targets(logits: np.ndarray, keep: np.ndarray | None, topk: int) -> tuple[np.ndarray, np.ndarray]:
    """``(S, W)`` for one sample: ``S = +1`` on each row's ``topk`` largest logits and ``-1`` on every
    other kept key; ``W`` weighs the pairs so that a row's positives and negatives count alike
    (masked keys weigh 0). Every kept pair is labelled: KSH's zeros ("don't care") would let the
    bits separate the top keys from the bottom ones only, leaving the middle, where the top-k
    competitors are, unranked."""
    lg = np.where(np.ones_like(logits, bool) if keep is None else keep[None, :], logits, -np.inf)
    n = int(np.isfinite(lg[0]).sum())
    k = min(topk, max(1, n // 2))
    top = np.argsort(-lg, axis=1)[:, :k]
    s = -np.ones(lg.shape)
    s[np.arange(len(lg))[:, None], top] = 1.0
    w = np.where(s > 0, 1.0, k / max(n - k, 1))
    if keep is not None:
        w[:, ~keep] = 0.0
    return s, w


def fit_head(
    qs: list[np.ndarray],
    ks: list[np.ndarray],
    logits: list[np.ndarray],
    keeps: list[np.ndarray | None],
    bits: int = 16,
    anchors: int = 25,
    topk: int = 10,
    iters: int = 100,
    seed: int = 0,
    key_bias: bool = True,
) -> HeadHash:
    """The hash of one head from calibration samples: ``qs[s]`` [Nq, d] queries (a subsample),
    ``ks[s]`` [N, d] keys, ``logits[s]`` [Nq, N] their real attention logits, ``keeps[s]`` the
    unmasked keys (or None)."""
    rng = np.random.default_rng(seed)
    pool = normalise(np.concatenate([*qs, *ks]))
    pool = pool[rng.choice(len(pool), size=min(len(pool), 8192), replace=False)]
    centres = _kmeans(pool, anchors, rng)
    sigma = float(np.mean(2.0 - 2.0 * pool @ centres.T)) or 1.0
    fq = [features(q, centres, sigma) for q in qs]
    fk = [features(k, centres, sigma) for k in ks]
    mu_q, mu_k = np.mean(np.concatenate(fq), 0), np.mean(np.concatenate(fk), 0)
    fq, fk = [f - mu_q for f in fq], [f - mu_k for f in fk]
    g = _key_bias(ks, logits, keeps) if key_bias else None
    if g is not None:  # the bits fit what the key bias leaves: row- and column-centred logits
        logits = [lg - k @ g for lg, k in zip(logits, ks)]
    sw = [targets(lg, kp, topk) for lg, kp in zip(logits, keeps)]
    resid, weight = [bits * t for t, _ in sw], [w for _, w in sw]
    w_q, w_k = np.zeros((bits, fq[0].shape[1])), np.zeros((bits, fk[0].shape[1]))
    for t in range(bits):
        # the weighted loss sum W (b S - H_q H_k^T)^2 drops by 2 y_q^T (W * R) y_k with bit t's y
        a_q, a_k = _fit_bit(fq, fk, [w * r for w, r in zip(weight, resid)], iters, rng)
        w_q[t], w_k[t] = a_q, a_k
        for s in range(len(resid)):
            resid[s] -= np.outer(np.sign(fq[s] @ a_q), np.sign(fk[s] @ a_k))
    return HeadHash(centres, sigma, mu_q, mu_k, w_q, w_k, g)


def _key_bias(ks, logits, keeps) -> np.ndarray:
    """``g`` with ``k_j . g`` the least-squares fit of key ``j``'s mean logit over the queries
    (up to a constant, which the weights' normalisation cancels): for ``logits = s Q K^T`` it is
    ``s`` times the mean query."""
    rows, target = [], []
    for k, lg, kp in zip(ks, logits, keeps):
        sel = np.ones(len(k), bool) if kp is None else kp
        rows.append(np.concatenate([k[sel], np.ones((int(sel.sum()), 1))], 1))
        target.append(lg[:, sel].mean(0))
    sol = np.linalg.lstsq(np.concatenate(rows).astype(np.float64), np.concatenate(target), rcond=None)[0]
    return sol[:-1]


def _objective(fq, fk, resid, a_q, a_k) -> float:
    return float(sum(np.sign(q @ a_q) @ r @ np.sign(k @ a_k) for q, k, r in zip(fq, fk, resid)))


def _fit_bit(fq, fk, resid, iters: int, rng) -> tuple[np.ndarray, np.ndarray]:
    m = sum(q.T @ r @ k for q, k, r in zip(fq, fk, resid))
    u, _, vt = np.linalg.svd(m)
    start = (u[:, 0], vt[0])
    scale_q = 1.0 / (np.std(np.concatenate([q @ start[0] for q in fq])) + 1e-12)
    scale_k = 1.0 / (np.std(np.concatenate([k @ start[1] for k in fk])) + 1e-12)
    a_q, a_k = start[0] * scale_q, start[1] * scale_k
    best = (_objective(fq, fk, resid, a_q, a_k), a_q.copy(), a_k.copy())
    # Adam on the tanh relaxation: maximise sum_s tanh(q a_q / 2)^T R tanh(k a_k / 2)
    params = [a_q, a_k]
    m1, m2 = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    lr, b1, b2 = 0.05, 0.9, 0.999
    norm = sum(r.size for r in resid)
    for step in range(1, iters + 1):
        gq, gk = np.zeros_like(a_q), np.zeros_like(a_k)
        for q, k, r in zip(fq, fk, resid):
            yq, yk = np.tanh(q @ a_q / 2), np.tanh(k @ a_k / 2)
            gq += q.T @ ((r @ yk) * (1 - yq**2) / 2)
            gk += k.T @ ((r.T @ yq) * (1 - yk**2) / 2)
        for i, g in enumerate((gq / norm, gk / norm)):
            m1[i] = b1 * m1[i] + (1 - b1) * g
            m2[i] = b2 * m2[i] + (1 - b2) * g * g
            params[i] += lr * (m1[i] / (1 - b1**step)) / (np.sqrt(m2[i] / (1 - b2**step)) + 1e-12)
    score = _objective(fq, fk, resid, a_q, a_k)
    return (a_q, a_k) if score > best[0] else (best[1], best[2])
