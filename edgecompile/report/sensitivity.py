"""Per-layer sensitivity of a quantized recipe and the automatic keep-float fix.

Sensitivity of a layer: the task metric's drop when only that layer is quantized (or rewritten
into integer-only ops) and everything else runs in float, measured on the first evaluation
samples with the module of :mod:`edgecompile.quant.layer_switch` (one build per recipe, one run
per layer and sample). Worst first. By default as many samples as one pass over the layers runs
in :data:`BUDGET_S` seconds, between :data:`MIN_SAMPLES` and :data:`MAX_SAMPLES` (the digits ViT:
32; all-MiniLM-L6-v2, 49 to 94 layers at 40-50 ms a run on 2 cores: 4); ``--sensitivity-samples N`` asks
for exactly N.

The fix: the recipe with the ``k`` most sensitive layers kept in float (``keep_float``) for the
smallest ``k`` whose drop on the whole evaluation set meets the budget, found by doubling ``k``
then bisecting (drops shrink as layers go back to float, though not strictly).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from edgecompile.recipe import parse_recipe

FIX_MAX_LAYERS = 16  # the fix keeps at most this many layers in float
MAX_SAMPLES = 32  # by default, sensitivity uses up to this many evaluation samples ...
BUDGET_S = 8.0  # ... as many as one pass over the layers runs in this many seconds on this machine
MIN_SAMPLES = 4


def layer_sensitivity(
    quant,
    samples: list[dict],
    input_names: list[str],
    reference: np.ndarray,
    score: Callable[[np.ndarray, int, np.ndarray], float],
    progress: Callable[[int, int], None] | None = None,
    budget_s: float | None = None,
) -> tuple[list[dict], int]:
    """``([{"layer", "kind", "drop"}] worst first, samples used)`` for the calibrated ``quant``
    (:class:`edgecompile.quant.plan.QuantResult`): ``drop`` is the metric with no layer quantized minus the
    metric with only that layer quantized, both from the same module, on ``samples`` (whose fp32
    outputs are ``reference``). With ``budget_s``, only the first samples that one pass over the
    layers runs in that time (at least :data:`MIN_SAMPLES`), from the time of one run."""
    import tvm

    from edgecompile.api import host_build
    from edgecompile.ir.host import HostFunction
    from edgecompile.ir.switch import flags, switch_width

    mod, layers = quant.calibration.switched()
    fn = HostFunction(mod, host_build())
    width = switch_width(mod)
    inputs = [[tvm.runtime.tensor(np.ascontiguousarray(s[n])) for n in input_names] for s in samples]

    def mean_score(k: int, limit: int | None = None) -> float:
        switch = tvm.runtime.tensor(flags(width, [] if k < 0 else [k]))
        total = 0.0
        for i, args in enumerate(inputs[:limit]):
            out = fn.first(*args, switch)
            total += score(out, i, reference[i])
        return total / len(inputs[:limit])

    say = progress or (lambda *_: None)
    if budget_s is not None:
        t0 = time.perf_counter()
        mean_score(-1, 1)
        per_run = time.perf_counter() - t0
        n = int(budget_s / max(per_run * (len(layers) + 1), 1e-9))
        inputs = inputs[: max(MIN_SAMPLES, min(n, len(inputs)))]
    base = mean_score(-1)
    rows = []
    for k, layer in enumerate(layers):
        say(k, len(layers))
        rows.append({"layer": layer["name"], "kind": layer["kind"], "drop": base - mean_score(k)})
    say(len(layers), len(layers))
    return sorted(rows, key=lambda r: -r["drop"]), len(inputs)


def with_kept_float(recipe: str, layers: list[str]) -> str:
    """``recipe`` with ``layers`` added to its quantizing part's ``keep_float``."""
    rec = parse_recipe(recipe)
    part = rec.quant_part()
    kept = [p for p in part.options.get("keep_float", "").split(";") if p]
    part.options["keep_float"] = ";".join([*kept, *(n for n in layers if n not in kept)])
    return str(rec)


def smallest_fix(drop_with: Callable[[int], float], limit: float, n: int) -> tuple[int | None, list[list]]:
    """The smallest ``k`` in ``1..n`` with ``drop_with(k) <= limit`` (doubling, then bisection
    between the last miss and the first hit), and every ``[k, drop]`` tried; None if ``n`` misses."""
    tried: dict[int, float] = {}

    def meets(k: int) -> bool:
        if k not in tried:
            tried[k] = drop_with(k)
        return tried[k] <= limit

    lo, hi = 0, None  # lo misses (0: the recipe itself), hi meets
    k = 1
    while k <= n:
        if meets(k):
            hi = k
            break
        lo = k
        k = n if k < n < 2 * k else 2 * k
    if hi is None:
        return None, [[k, d] for k, d in sorted(tried.items())]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
    return hi, [[k, d] for k, d in sorted(tried.items())]
