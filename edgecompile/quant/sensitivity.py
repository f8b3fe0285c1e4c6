"""Per-layer sensitivity of a quantized recipe, and the search for the fewest layers to change.

Sensitivity of a layer: the task metric's drop when only that layer is quantized (or rewritten
into integer-only ops) and everything else runs in float, measured with the module of
:mod:`edgecompile.quant.layer_switch` (one build per recipe, one run per layer and sample). Worst
first. ``report`` (its keep-float fix) and the accuracy budget of ``compile``
(:mod:`edgecompile.quant.budget`) both rank layers by it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import tvm

from edgecompile.ir.host import HostFunction
from edgecompile.ir.switch import flags, switch_width

MIN_SAMPLES = 4  # a time budget never cuts sensitivity below this many samples


def layer_sensitivity(
    calibration,
    samples: list[dict],
    input_names: list[str],
    reference: np.ndarray,
    score: Callable[[np.ndarray, int, np.ndarray], float],
    build: Callable,
    progress: Callable[[int, int], None] | None = None,
    budget_s: float | None = None,
    only: frozenset | None = None,
) -> tuple[list[dict], int]:
    """``([{"layer", "kind", "drop"}] worst first, samples used)`` for ``calibration``
    (:class:`edgecompile.quant.plan.Calibration`): ``drop`` is the metric with no layer quantized
    minus the metric with only that layer quantized, both from the same module (built by
    ``build``), on ``samples`` (whose fp32 outputs are ``reference``). With ``budget_s``, only the
    first samples that one pass over the layers runs in that time (at least :data:`MIN_SAMPLES`),
    from the time of one run. With ``only`` (layer names), just those layers are measured."""
    mod, layers = calibration.switched()
    measured = [(k, layer) for k, layer in enumerate(layers) if only is None or layer["name"] in only]
    fn = HostFunction(mod, build)
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
        n = int(budget_s / max(per_run * (len(measured) + 1), 1e-9))
        inputs = inputs[: max(MIN_SAMPLES, min(n, len(inputs)))]
    base = mean_score(-1)
    rows = []
    for i, (k, layer) in enumerate(measured):
        say(i, len(measured))
        rows.append({"layer": layer["name"], "kind": layer["kind"], "drop": base - mean_score(k)})
    say(len(measured), len(measured))
    return sorted(rows, key=lambda r: -r["drop"]), len(inputs)


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
