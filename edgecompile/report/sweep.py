"""``edgecompile report``: compile a model with each candidate recipe, measure task metric and
latency on this machine, and recommend the recipe to ship.

The output directory holds ``report.json`` (the source of truth), ``report.md`` and a
self-contained ``report.html`` (:mod:`edgecompile.report.render`), and ``artifacts/`` with every
build. ``report.json`` is rewritten after each recipe, so a rerun into the same directory with the
same model, target, evaluation data and metric reuses the finished rows (resumable).

Schema (version 2)::

    {"version": 2, "model": {"file", "sha256"}, "target", "metric", "eval": {"file", "sha256",
     "samples", "labels"}, "timing": {"runs", "threads", "device": "local" | "rpc KEY@HOST:PORT"},
     "max_drop", "latency_budget_ms",
     "rows": [{"recipe", "metric", "drop", "drop_ci95": [lo, hi], "latency_ms": {"median", "p90"},
               "size_bytes", "memory_bytes", "energy_uj", "compile_s", "artifact",
               "scores": [per-sample metric],
               # quantized recipes:
               "sensitivity": {"samples", "layers": [{"layer", "kind", "drop"}, ...worst first]},
               "fix": {"limit", "recipe" | null, "tried": [[k, drop], ...], "why"?},
               # the fix's own row:
               "fix_of": recipe, "kept_float": [layer, ...]}],
     "pareto": [recipe, ...], "recommended": recipe | null, "reason": str}

``drop`` is fp32's metric minus the recipe's (positive: worse), its interval a paired bootstrap over
the evaluation samples. ``energy_uj`` is the compiler's estimate from op counts and the target
profile's energy table (:mod:`edgecompile.ir.energy`). ``memory_bytes`` is what the model holds on the
device by its memory plan (manifest ``memory``: weights, activation arena, outputs, largest kernel
scratch and library; the runtime's own few MB excluded); None for a Core ML package. A quantized
recipe over ``--max-drop`` gets a fix row: the same recipe with its most sensitive layers kept in
float (:mod:`edgecompile.report.sensitivity`).
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgecompile.api import host_build
from edgecompile.errors import InputSpecError, ModelLoadError, RecipeError
from edgecompile.recipe import parse_recipe
from edgecompile.report.metrics import bootstrap_drop, eval_samples, read_eval, scorer
from edgecompile.report.remote import RemoteDevice
from edgecompile.report.sensitivity import (
    BUDGET_S,
    FIX_MAX_LAYERS,
    MAX_SAMPLES,
    layer_sensitivity,
    smallest_fix,
    with_kept_float,
)
from edgecompile.runtime.manifest import read_verified, sha256_file

SCHEMA = 2
SWEEP = (
    "fp32",
    "int8",
    "int8:observer=mse",
    "int8-integer-only",
    "int8-integer-only:ibert",
    "lowrank:ratio=0.5",
    "lowrank:ratio=0.5+int8",
)


def _slug(recipe: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", recipe)


def parse_max_drop(text: str | None, metric: str) -> float | None:
    """``--max-drop`` in the metric's units: ``1%`` is 1 point of top-1 (already a percentage) and
    1% of fp32's value for the other metrics (resolved later, see :func:`recommend`)."""
    if text is None:
        return None
    try:
        return float(text.rstrip("%")) if metric == "top1" or not text.endswith("%") else -float(text[:-1])
    except ValueError as e:
        raise RecipeError(f"--max-drop takes a number or a percentage, got {text!r}") from e


def pareto(rows: list[dict]) -> list[str]:
    """Recipes no other row beats on both latency (lower) and metric (higher)."""
    front = []
    for r in rows:
        lr, mr = r["latency_ms"]["median"], r["metric"]
        dominated = any(
            o is not r
            and o["latency_ms"]["median"] <= lr
            and o["metric"] >= mr
            and (o["latency_ms"]["median"] < lr or o["metric"] > mr)
            for o in rows
        )
        if not dominated:
            front.append(r["recipe"])
    return front


def recommend(rows: list[dict], max_drop: float | None, budget_ms: float | None) -> tuple[str | None, str]:
    """The recipe to ship and why: the fastest within ``max_drop`` (a negative value is a fraction
    in percent of fp32's metric), else the most accurate within ``budget_ms``, else the fastest
    within a drop of 0."""
    base = rows[0]
    if budget_ms is not None and max_drop is None:
        fit = [r for r in rows if r["latency_ms"]["median"] <= budget_ms]
        if not fit:
            return None, f"no recipe runs within {budget_ms:g} ms (fastest: {min(rows, key=_ms)['recipe']})"
        best = max(fit, key=lambda r: (r["metric"], -_ms(r)))
        return best["recipe"], (
            f"{best['recipe']} is the most accurate recipe within {budget_ms:g} ms "
            f"({_ms(best):.2f} ms, drop {best['drop']:+.3g})"
        )
    limit = resolve_limit(max_drop, base["metric"])
    fit = [r for r in rows if r["drop"] <= limit and (budget_ms is None or _ms(r) <= budget_ms)]
    if not fit:
        return None, f"no recipe keeps the drop within {limit:.3g}"
    best = min(fit, key=_ms)
    return best["recipe"], (
        f"{best['recipe']} is the fastest recipe whose drop ({best['drop']:+.3g}, 95% CI "
        f"{best['drop_ci95'][0]:+.3g}..{best['drop_ci95'][1]:+.3g}) is within {limit:.3g}: "
        f"{_ms(best):.2f} ms against fp32's {_ms(base):.2f} ms ({_ms(base) / _ms(best):.2f}x)"
    )


def planned_memory(manifest: dict) -> int | None:
    """Bytes the model holds on the device by its manifest's memory plan (None without one)."""
    plan = manifest.get("memory")
    keys = ("weights_bytes", "arena_bytes", "outputs_bytes", "kernel_scratch_bytes", "library_bytes")
    return None if not plan else sum(int(plan.get(k) or 0) for k in keys)


def _ms(row: dict) -> float:
    return row["latency_ms"]["median"]


def run_report(
    model: str | Path,
    out_dir: str | Path,
    eval_path: str | Path,
    *,
    target: str = "native",
    calib=None,
    metric: str = "top1",
    recipes: tuple[str, ...] = SWEEP,
    max_drop: str | None = None,
    latency_budget_ms: float | None = None,
    input_shapes: dict | None = None,
    runs: int = 30,
    threads: int = 1,
    sensitivity_samples: int | None = None,
    rpc: RemoteDevice | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    lengths: list[int] | None = None,
) -> dict:
    """Measure every recipe (fp32 first, the baseline) and write the report; returns report.json's dict.
    ``sensitivity_samples`` evaluation samples measure per-layer sensitivity (None: as many as fit
    :data:`edgecompile.report.sensitivity.BUDGET_S`; 0: none); ``rpc``
    times the artifacts on a device of a TVM RPC tracker instead of this machine. ``lengths`` (with a
    ranged ``input_shapes``, e.g. ``input_ids=1x1..256``) also times every artifact at each of
    those sizes of its first ranged dimension: ``latency_ms["by_length"]``."""
    model, out_dir = Path(model), Path(out_dir)
    if not model.is_file():
        raise ModelLoadError(f"model file not found: {model}")
    if rpc is not None:
        rpc.check()  # before hours of compiling
    out_dir.mkdir(parents=True, exist_ok=True)
    recipes = ("fp32", *[r for r in recipes if r != "fp32"])
    arrays, labels = read_eval(eval_path)
    head = _report_head(model, target, metric, Path(eval_path), runs, threads, rpc)
    report_file = out_dir / "report.json"
    done = _finished_rows(report_file, head)
    ref_file = out_dir / "fp32_outputs.npy"
    if "fp32" not in done or not ref_file.exists():
        done = {}
    sweep = _Sweep(model, out_dir, target, calib, input_shapes, metric, arrays, labels, runs, threads, rpc,
                   sensitivity_samples, progress or (lambda *_: None))  # fmt: skip
    sweep.lengths = _checked_lengths(lengths, input_shapes, rpc)
    if done:
        sweep.reference, sweep.base_scores = np.load(ref_file), np.array(done["fp32"]["scores"])
    finish = functools.partial(_finish, head=head, has_labels=labels is not None, max_drop=max_drop,
                               budget_ms=latency_budget_ms, report_file=report_file)  # fmt: skip
    rows = _measure_all(sweep, recipes, done, ref_file, finish)
    limit = resolve_limit(parse_max_drop(max_drop, metric), rows[0]["metric"])
    if max_drop is not None:
        for row in list(rows):
            fix = sweep.fix(row, rows, limit, done)
            if fix is not None:
                rows.insert(rows.index(row) + 1, fix)
                finish(rows)
    return finish(rows)


def _checked_lengths(lengths: list[int] | None, input_shapes: dict | None, rpc) -> list[int]:
    """``lengths`` when the inputs have a range that holds them (and the timing is local), else a
    clear error; [] when none are asked for."""
    from edgecompile.frontend.spec import is_ranged, parse_shape_spec

    if not lengths:
        return []
    shapes = [parse_shape_spec(v) if isinstance(v, str) else v for v in (input_shapes or {}).values()]
    ranges = [d for shape in shapes if is_ranged(shape) for d in shape if isinstance(d, tuple)]
    if not ranges:
        raise InputSpecError("--lengths times a ranged artifact: give a range, e.g. --input-shape input_ids=1x1..256")
    if rpc is not None:
        raise InputSpecError("--lengths is timed on this machine; it cannot be combined with --rpc")
    lo, hi = ranges[0]
    bad = [n for n in lengths if not lo <= n <= hi]
    if bad:
        raise InputSpecError(f"--lengths {bad[0]} is outside the range {lo}..{hi}")
    return list(lengths)


def _report_head(model: Path, target: str, metric: str, eval_path: Path, runs: int, threads: int, rpc) -> dict:
    """What every row of one report shares; a saved report with another head is not reused."""
    return {
        "version": SCHEMA,
        "model": {"file": model.name, "sha256": sha256_file(model)},
        "target": target,
        "metric": metric,
        "eval": {"file": eval_path.name, "sha256": sha256_file(eval_path)},
        "timing": {"runs": runs, "threads": threads, "device": rpc.describe() if rpc else "local"},
    }


def _measure_all(sweep, recipes, done: dict, ref_file: Path, finish) -> list[dict]:
    """Each recipe's row in order (reusing the finished ones of a saved report), the report
    rewritten after each."""
    rows: list[dict] = []
    for k, recipe in enumerate(recipes):
        sweep.step = (k, len(recipes))
        if recipe in done:
            rows.append({**done[recipe], "reused": True})
            sweep.say(f"{recipe}: reused", k + 1, len(recipes))
            continue
        rows.append(sweep.measure(recipe))
        if k == 0:
            np.save(ref_file, sweep.reference)
        finish(rows)
        sweep.say(f"{recipe}: done", k + 1, len(recipes))
    return rows


def resolve_limit(max_drop: float | None, base_metric: float) -> float:
    """The drop budget in the metric's units (0 without one); see :func:`parse_max_drop`."""
    if max_drop is None:
        return 0.0
    return max_drop if max_drop >= 0 else -max_drop / 100 * abs(base_metric)


def _finished_rows(report_file: Path, head: dict) -> dict[str, dict]:
    """The rows of an earlier report in the same directory with the same model, target, metric,
    evaluation data and timing, by recipe."""
    if not report_file.exists():
        return {}
    try:
        old = json.loads(report_file.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    same = {**old, "eval": {k: old.get("eval", {}).get(k) for k in head["eval"]}}
    if not all(same.get(k) == v for k, v in head.items()):
        return {}
    return {r["recipe"]: r for r in old.get("rows", [])}


class _Sweep:
    """Compiles, evaluates and times recipes for :func:`run_report`."""

    def __init__(self, model, out_dir, target, calib, input_shapes, metric, arrays, labels, runs, threads, rpc,
                 sensitivity_samples, say):  # fmt: skip
        self.model, self.out_dir, self.target, self.calib = model, out_dir, target, calib
        self.input_shapes, self.metric, self.arrays, self.labels = input_shapes, metric, arrays, labels
        self.runs, self.threads, self.rpc, self.sensitivity_samples = runs, threads, rpc, sensitivity_samples
        self.say = say
        self.samples: list[dict] | None = None
        self.score = None
        self.reference: np.ndarray | None = None
        self.base_scores: np.ndarray | None = None
        self.step = (0, 1)
        self.lengths: list[int] = []

    def stage(self, msg: str) -> None:
        self.say(msg, *self.step)

    def measure(self, recipe: str, sensitivity: bool = True, timed: bool = True) -> dict:
        """One row: compile, evaluate (and per-layer sensitivity), time."""
        from edgecompile.api import compile as compile_model

        self.stage(f"{recipe}: compiling")
        quant: list = []
        t0 = time.perf_counter()
        art = compile_model(
            str(self.model), self.target, self.out_dir / "artifacts" / _slug(recipe), input_shapes=self.input_shapes,
            recipe=recipe, calib=None if recipe == "fp32" else self.calib, on_quantized=quant.append,
        )  # fmt: skip
        compile_s = time.perf_counter() - t0
        m = None if self.rpc is not None else _load(art)  # on a device of the tracker: not loaded here
        manifest = read_verified(art) if m is None else m.manifest
        scores = self.evaluate(recipe, art, manifest, m)
        row = {
            "recipe": recipe,
            "metric": float(scores.mean()),
            "drop": float(self.base_scores.mean() - scores.mean()),
            "latency_ms": None,
            "size_bytes": sum(f.stat().st_size for f in Path(art).iterdir() if f.is_file()),
            "memory_bytes": planned_memory(manifest),
            "energy_uj": (manifest.get("energy") or {}).get("total_uj"),
            "compile_s": round(compile_s, 2),
            "artifact": str(Path(art).relative_to(self.out_dir)),
            "scores": [float(x) for x in scores],
        }
        if sensitivity and quant and self.sensitivity_samples != 0:
            n = min(self.sensitivity_samples or MAX_SAMPLES, len(self.samples))
            names = [i["name"] for i in manifest["inputs"]]
            sens, used = layer_sensitivity(
                quant[-1].calibration, self.samples[:n], names, self.reference[:n], self.score, host_build(),
                lambda d, t: self.stage(f"{recipe}: sensitivity, layer {d}/{t}"),
                BUDGET_S if self.sensitivity_samples is None else None,
            )  # fmt: skip
            row["sensitivity"] = {"samples": used, "layers": sens}
        if timed:
            row["latency_ms"] = self.time(recipe, art, m)
        return row

    def evaluate(self, recipe: str, art: Path, manifest: dict, m) -> np.ndarray:
        """Per-sample scores of the artifact, run here (``m``) or on the tracker's devices."""
        from edgecompile.frontend.spec import TensorSpec

        if self.samples is None:
            specs = [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in manifest["inputs"]]
            self.samples = eval_samples(self.arrays, self.labels, specs)
            self.score = scorer(self.metric, self.labels)
        self.stage(f"{recipe}: evaluating {len(self.samples)} samples")
        name = manifest["outputs"][0]["name"]
        if m is None:
            outs = self.rpc.outputs(art, self.samples, name)
        else:
            outs = np.stack([m.run(s)[name] for s in self.samples])
        if self.reference is None:
            self.reference = outs
        scores = np.array([self.score(o, i, r) for i, (o, r) in enumerate(zip(outs, self.reference))])
        if self.base_scores is None:
            self.base_scores = scores if recipe == "fp32" else None
        return scores

    def time(self, recipe: str, art: Path, m) -> dict:
        if self.rpc is not None:
            self.stage(f"{recipe}: timing on {self.rpc.describe()}")
            return self.rpc.time(art, self.samples[0], self.runs, self.threads)
        self.stage(f"{recipe}: timing")
        bench = m.benchmark(runs=self.runs, threads=self.threads, feeds=self.samples[0])
        out = {"median": bench.median_ms, "p90": bench.p90_ms}
        if self.lengths and m.manifest.get("ranged"):
            by = {}
            for n in self.lengths:
                self.stage(f"{recipe}: timing at length {n}")
                feeds = at_length(m, self.samples[0], n)
                by[str(n)] = m.benchmark(runs=self.runs, threads=self.threads, feeds=feeds).median_ms
            out["by_length"] = by
        return out

    def fix(self, row: dict, rows: list[dict], limit: float, done: dict) -> dict | None:
        """The keep-float fix row for a quantized ``row`` over the budget (module
        :mod:`edgecompile.report.sensitivity`); records the search in ``row["fix"]``."""
        recipe = row["recipe"]
        rec = parse_recipe(recipe)
        if row.get("fix_of") or rec.quant_part() is None or row["drop"] <= limit or not row.get("sensitivity"):
            return None
        old = row.get("fix")
        if old is not None and old.get("limit") == limit:
            return {**done[old["recipe"]], "reused": True} if old.get("recipe") in done else None
        rest = "+".join(str(p) for p in rec.parts if p is not rec.quant_part())
        floor = next((r for r in rows if rest and r["recipe"] == rest), None)
        if floor is not None and floor["drop"] > limit:
            why = f"{rest} alone drops {floor['drop']:+.3g}: keeping layers in float cannot undo it"
            row["fix"] = {"limit": limit, "recipe": None, "tried": [], "why": why}
            return None
        worst = [s["layer"] for s in row["sensitivity"]["layers"] if s["drop"] > 0][:FIX_MAX_LAYERS]
        if not worst:
            why = "no single layer's sensitivity is positive"
            row["fix"] = {"limit": limit, "recipe": None, "tried": [], "why": why}
            return None
        trials: dict[int, dict] = {}

        def drop_with(k: int) -> float:
            trials[k] = self.measure(with_kept_float(recipe, worst[:k]), sensitivity=False, timed=False)
            return trials[k]["drop"]

        k, tried = smallest_fix(drop_with, limit, len(worst))
        row["fix"] = {"limit": limit, "recipe": None if k is None else trials[k]["recipe"], "tried": tried}
        if k is None:
            row["fix"]["why"] = f"keeping the {len(worst)} most sensitive layers in float still misses {limit:.3g}"
            return None
        best = trials[k]
        art = self.out_dir / best["artifact"]
        best["latency_ms"] = self.time(best["recipe"], art, None if self.rpc else _load(art))
        best["fix_of"] = recipe
        best["kept_float"] = worst[:k]
        return best


def at_length(m, sample: dict, n: int) -> dict:
    """``sample`` cut (or zero-padded) to size ``n`` in the first ranged dimension of artifact ``m``."""
    from edgecompile.runtime.buckets import pad_to

    ranged = m.manifest["ranged"]
    group = ranged["dims"][0]["group"]
    out = {}
    for name, a in sample.items():
        shape = list(a.shape)
        for d in ranged["dims"]:
            if d["input"] == name and d["group"] == group:
                shape[d["axis"]] = n
        out[name] = pad_to(a[tuple(slice(0, k) for k in shape)], tuple(shape))
    return out


def _load(art: Path):
    from edgecompile.runtime import load

    return load(art)


def _finish(rows, head, has_labels: bool, max_drop, budget_ms, report_file: Path) -> dict:
    base = np.array(rows[0]["scores"])
    for r in rows:
        s = np.array(r["scores"])
        r["drop"] = float(base.mean() - s.mean())
        r["drop_ci95"] = list(bootstrap_drop(base, s))
    limit = parse_max_drop(max_drop, head["metric"])
    recommended, reason = recommend(rows, limit, budget_ms)
    report = {
        **head,
        "eval": {**head["eval"], "samples": len(base), "labels": has_labels},
        "max_drop": max_drop,
        "latency_budget_ms": budget_ms,
        "rows": [{k: v for k, v in r.items() if k != "reused"} for r in rows],
        "pareto": pareto(rows),
        "recommended": recommended,
        "reason": reason,
    }
    report_file.write_text(json.dumps(report, indent=1))
    for r, saved in zip(rows, report["rows"]):
        saved["reused"] = r.get("reused", False)  # for the caller only; not in report.json
    return report
