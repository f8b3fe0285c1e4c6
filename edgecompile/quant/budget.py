"""The accuracy budget of a quantizing recipe: ``int8:max_drop=1%`` (``int8-integer-only`` too).

What is measured: fidelity to the float model, the cosine similarity of the model's first output
to the float model's, averaged over held-out samples; the drop is 1 minus that mean (the float
model's own cosine is 1), so ``max_drop=1%`` (or ``0.01``) asks for a mean cosine of at least 0.99.
``metric=pearson`` centres both outputs first (Pearson's r): for outputs far from zero, such as a
sigmoid map, whose cosine stays near 1 whatever the error.
Decision: ``compile`` sees no labels, so its budget is fidelity; a task metric (top-1 with labels,
a custom one) is ``edgecompile report --max-drop``'s, whose keep-float fix searches the same way.

Held-out samples: the last quarter of the calibration samples (at least :data:`MIN_HELD`), which
calibration then does not see, so the budget is checked on data the scales were not fitted to.

The ladder, cheapest first: a layer is static int8 (one scale from calibration), dynamic int8
(run-time row scales, :mod:`edgecompile.quant.act_choice`: linear layers and matmuls, in the
integer-only recipe linear layers), int16 (linear layers), or float. When the recipe as calibrated misses the budget,
the layers are ranked by sensitivity (:mod:`edgecompile.quant.sensitivity`: the drop with that
layer alone quantized, on as many held-out samples as one pass over the layers runs in
:data:`RANK_BUDGET_S`, at least 4), then

1. the ``k`` most sensitive static layers that can take run-time scales go dynamic, for the
   smallest ``k`` that meets the budget (doubling, then bisection: drops shrink as layers move up
   the ladder, though not strictly);
2. if all of them dynamic still misses, they stay dynamic (where that lowered the drop at all);
   in the integer-only recipes, the softmax and GELU layers whose other integer form (I-BERT's
   for I-ViT's, and back) costs less fidelity quantized alone (one more sensitivity pass, on the
   same samples, with every such layer swapped) take it, the ``k`` that save the most first,
   smallest ``k`` (integers kept, where float would cost latency);
3. if every helpful swap still misses, the swaps stay (where they lowered the drop) and the ``k``
   most sensitive linear layers read int16 activations (``a16``, :mod:`edgecompile.intref.wide`:
   integers kept, twice the layer's GEMM), smallest ``k``;
4. if all of those still miss, they stay int16 (where that lowered the drop) and the ``k`` most
   sensitive layers of any kind (the integer-only nonlinears too) are kept in float, smallest
   ``k`` again (a layer kept in float leaves the earlier rungs).

Each try is a rewrite, a build for this machine and a run of the held-out samples: about
``2 log2`` of the candidates builds per rung reached (:meth:`_Ladder.climb`). The manifest's
``quantization.budget`` records the limit, the drop before and after, each try, and per changed
layer its mode, why, and its sensitivity.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np

from edgecompile.errors import CalibrationError, RecipeError
from edgecompile.ir.host import HostFunction
from edgecompile.quant.sensitivity import layer_sensitivity, smallest_fix

MIN_HELD = 2
HELD_FRACTION = 4  # one sample in this many is held out
# the integer-only nonlinears with two integer forms (LayerNorm's ivit and ibert are one integer
# LayerNorm; tanh has one), and the other of each form
SWAPPABLE = ("softmax", "gelu")
OTHER_IMPL = {"ivit": "ibert", "ibert": "ivit"}
RANK_BUDGET_S = 60.0  # ranking uses the held-out samples one pass over the layers runs in this time (at least 4)
FIDELITY = {
    "cosine": "cosine of the first output to the float model's, mean over held-out samples",
    "pearson": "Pearson r of the first output with the float model's, mean over held-out samples",
}


def held_out(samples: list[dict]) -> tuple[list[dict], list[dict]]:
    """``(calibration samples, held-out samples)``: the last quarter held out (module docstring)."""
    n = len(samples)
    held = max(MIN_HELD, n // HELD_FRACTION)
    if n - held < 1:
        raise CalibrationError(
            f"max_drop checks the accuracy budget on held-out samples (the last {held} of the calibration "
            f"data, which calibration then does not use), so it needs at least {held + 1} samples; the data holds {n}"
        )
    return samples[: n - held], samples[n - held :]


def cosine(out: np.ndarray, ref: np.ndarray, centred: bool = False) -> float:
    """Cosine similarity of two outputs, flattened (1 for two all-zero ones); ``centred``: of
    their deviations from their means (Pearson's r)."""
    a, b = out.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    if centred:
        a, b = a - a.mean(), b - b.mean()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    return float(a @ b / max(na * nb, 1e-30))


class _Trials:
    """Drops of ``calibration`` with other dynamic, int16, float and swapped layers, each measured once."""

    def __init__(self, calibration, held, reference, centred, build, names, say, trim):
        self.calibration, self.held, self.reference, self.centred = calibration, held, reference, centred
        self.build, self.names, self.say, self.trim = build, names, say, trim
        self.tries: list[dict] = []
        self.done: dict = {}
        self.expected = 2

    def drop(self, dynamic, keep, nonlinear: dict | None = None, wide=None) -> float:
        base = self.calibration
        nonlinear = base.nonlinear if nonlinear is None else nonlinear
        wide = base.wide if wide is None else frozenset(wide)
        key = (frozenset(dynamic), frozenset(keep), frozenset(nonlinear.items()), wide)
        if key in self.done:
            return self.done[key]
        cal = dataclasses.replace(
            base, dynamic=frozenset(dynamic), keep_float=tuple(keep), nonlinear=nonlinear, wide=wide, record={}
        )
        fn = HostFunction(cal.rewrite(), self.build, self.names)
        outs = [self.trim(fn.first(s), s) for s in self.held]
        drop = 1.0 - float(np.mean([cosine(o, r, self.centred) for o, r in zip(outs, self.reference)]))
        self.tries.append(
            {
                "dynamic_added": len(set(dynamic) - base.dynamic),
                "swapped": sum(1 for k, v in nonlinear.items() if base.nonlinear.get(k) != v),
                "a16_added": len(wide - base.wide),
                "float_added": len(set(keep) - set(base.keep_float)),
                "drop": round(drop, 6),
            }
        )
        self.say("meeting the accuracy budget", len(self.tries), max(self.expected, len(self.tries)))
        self.done[key] = drop
        return drop


@dataclasses.dataclass
class _Ladder:
    """Where the budget's search stands: the layers moved so far and the plan rows saying why."""

    trials: _Trials
    limit: float
    drop: float  # of the state as it stands
    dynamic: set
    keep: list
    nonlinear: dict
    wide: set
    plan: list = dataclasses.field(default_factory=list)

    def state(self, **changes) -> dict:
        now = {"dynamic": self.dynamic, "keep": self.keep, "nonlinear": self.nonlinear, "wide": self.wide}
        return {**now, **changes}

    def climb(self, n: int, moved: Callable[[int], dict], rows: Callable[[int], list]) -> bool:
        """One rung: ``moved(j)`` is the state with its first ``j`` candidates moved up (of ``n``),
        ``rows(j)`` their plan rows. True with the fewest that meet the limit; else every candidate
        stays moved where that lowered the drop, and False."""
        if n == 0:
            return False
        self.trials.expected += 2 * math.ceil(math.log2(n + 1))
        every = self.trials.drop(**moved(n))
        if every <= self.limit:
            k, tried = smallest_fix(lambda j: self.trials.drop(**moved(j)), self.limit, n)
            n, every = k, dict(tried)[k]
        elif every >= self.drop:
            return False
        self.__dict__.update(moved(n))
        self.plan += rows(n)
        self.drop = every
        return every <= self.limit


def meet_budget(
    calibration,
    reference_of: Callable[[dict], np.ndarray],
    held: list[dict],
    limit: float,
    metric: str,
    build: Callable,
    input_names: list[str],
    dynamic_kinds: tuple[str, ...],
    say: Callable[[str, int, int], None],
    trim: Callable[[np.ndarray, dict], np.ndarray] = lambda out, _sample: out,
):
    """``(calibration, budget)``: ``calibration`` (:class:`edgecompile.quant.plan.Calibration`) with
    the fewest layers moved up the ladder for a drop of ``metric`` (cosine | pearson) within
    ``limit`` on ``held`` (module docstring), and the manifest's ``budget`` entry;
    ``reference_of(sample)`` is the float model's first output; ``trim(output, sample)`` cuts a
    quantized model's first output alike (a ranged compile's padding)."""
    reference = [reference_of(s) for s in held]
    centred = metric == "pearson"
    trials = _Trials(calibration, held, reference, centred, build, input_names, say, trim)
    cal = calibration
    at = _Ladder(trials, limit, 0.0, set(cal.dynamic), list(cal.keep_float), dict(cal.nonlinear), set(cal.wide))
    before = at.drop = trials.drop(at.dynamic, at.keep)
    budget = {"metric": FIDELITY[metric], "max_drop": limit, "held_out": len(held), "drop_before": round(before, 6)}
    if before > limit:
        score = lambda out, i, ref: cosine(trim(out, held[i]), ref, centred)  # noqa: E731
        rank = functools.partial(layer_sensitivity, input_names=input_names, score=score, build=build,
                                 progress=lambda d, t: say("ranking", d, t))  # fmt: skip
        sens, used = rank(cal, samples=held, reference=reference, budget_s=RANK_BUDGET_S)
        on_ranked = functools.partial(rank, samples=held[:used], reference=reference[:used])  # sens's samples
        _climb_ladder(at, cal, sens, dynamic_kinds, on_ranked)
    chosen = dataclasses.replace(
        cal, dynamic=frozenset(at.dynamic), keep_float=tuple(at.keep), nonlinear=at.nonlinear,
        wide=frozenset(at.wide), record={},
    )  # fmt: skip
    return chosen, {**budget, "drop": round(at.drop, 6), "tries": trials.tries, "plan": at.plan}


def _climb_ladder(at: _Ladder, cal, sens: list[dict], dynamic_kinds, on_ranked: Callable) -> None:
    """The rungs in turn (module docstring) until one meets the limit; a RecipeError where even
    every layer in float misses it."""
    row = functools.partial(_row, sens)
    hurt = [r["layer"] for r in sens if r["drop"] > 0]
    kinds = {r["layer"]: r["kind"] for r in sens}
    ups = _taken(cal, [n for n in hurt if kinds[n] in dynamic_kinds], "dynamic", "dynamic")
    free = [r["layer"] for r in sens]  # the layers the recipe converts, most sensitive first
    at.trials.expected = 3  # and each rung's doubling and bisection (_Ladder.climb)
    if at.climb(len(ups), lambda j: at.state(dynamic=at.dynamic | set(ups[:j])),
                lambda j: [row(n, "dynamic") for n in ups[:j]]):  # fmt: skip
        return
    swaps = _other_impls(cal, sens, on_ranked)
    swapped = lambda j: {**at.nonlinear, **{s["layer"]: s["mode"] for s in swaps[:j]}}  # noqa: E731
    if at.climb(len(swaps), lambda j: at.state(nonlinear=swapped(j)), lambda j: swaps[:j]):
        return
    wides = _taken(cal, [n for n in hurt if kinds[n] == "linear"], "wide", "a16")  # a rewrite: only when reached
    if at.climb(len(wides), lambda j: at.state(wide=at.wide | set(wides[:j])),
                lambda j: [row(n, "a16") for n in wides[:j]]):  # fmt: skip
        return
    moved = lambda j: at.state(dynamic=at.dynamic - set(free[:j]), wide=at.wide - set(free[:j]),  # noqa: E731
                               keep=at.keep + free[:j])  # fmt: skip
    before_float = list(at.plan)
    if not at.climb(len(free), moved, lambda j: [row(n, "float") for n in free[:j]]):
        raise RecipeError(
            f"max_drop={at.limit:g}: even with every layer in float the drop on the held-out samples is "
            f"{at.trials.drop(**moved(len(free))):.4g}; the float model itself misses it (held-out samples unlike "
            "the rest?)"
        )
    floated = {r["layer"] for r in at.plan[len(before_float):]}
    at.plan = [r for r in before_float if r["layer"] not in floated] + at.plan[len(before_float):]


def _other_impls(calibration, sens: list[dict], rank: Callable) -> list[dict]:
    """The integer-only recipe's softmax and GELU layers whose other integer implementation (I-BERT
    for I-ViT and back) costs less fidelity quantized alone than theirs, as plan rows (mode: the
    other implementation), most fidelity saved first; ``rank(calibration, only=names)`` measures
    those layers alone as ``sens`` was (:func:`edgecompile.quant.sensitivity.layer_sensitivity`,
    the same samples). Empty for int8 and where nothing is saved."""
    other = {k: OTHER_IMPL[v] for k, v in calibration.nonlinear.items() if k in SWAPPABLE and v in OTHER_IMPL}
    names = {la.name: other[la.kind] for la in calibration.layers if la.kind in other}
    if not names:
        return []
    alone = {r["layer"]: r["drop"] for r in sens}
    swapped, _ = rank(
        dataclasses.replace(calibration, nonlinear={**calibration.nonlinear, **names}, record={}), only=frozenset(names)
    )
    rows = [
        {"layer": r["layer"], "mode": names[r["layer"]], "drop_alone": round(float(r["drop"]), 6),
         "why": f"quantized alone it costs {r['drop']:.3g} of fidelity with {names[r['layer']]}, "
                f"{alone[r['layer']]:.3g} with {calibration.nonlinear[r['kind']]}"}
        for r in swapped
        if r["layer"] in names and r["layer"] in alone and r["drop"] < alone[r["layer"]]
    ]  # fmt: skip
    return sorted(rows, key=lambda row: row["drop_alone"] - alone[row["layer"]])


def _taken(calibration, names: list[str], field: str, act: str) -> list[str]:
    """Those of ``names`` a rewrite with them added to ``calibration``'s ``field`` (dynamic, wide)
    really emits as ``act`` (one whose input has no single scale, e.g. read per channel, keeps the
    static path), in order, less those already so; a rewrite, no build."""
    dataclasses.replace(calibration, **{field: getattr(calibration, field) | set(names)}, record={}).rewrite()
    acts = {la.name: la.info.get("act") for la in calibration.layers}
    return [n for n in names if acts.get(n) == act and n not in getattr(calibration, field)]


def _row(sens: list[dict], name: str, mode: str) -> dict:
    rank = next(i for i, r in enumerate(sens) if r["layer"] == name)
    drop = sens[rank]["drop"]
    return {
        "layer": name,
        "mode": mode,
        "why": f"sensitivity rank {rank + 1} of {len(sens)}: quantized alone it costs {drop:.3g} of fidelity",
        "drop_alone": round(float(drop), 6),
    }
