"""``edgecompile report``: compile a model with each candidate recipe, measure task metric and
latency on this machine, and recommend the recipe to ship.

The output directory holds ``report.json`` (the source of truth), ``report.md`` and a
self-contained ``report.html`` (:mod:`edgecompile.report.render`), and ``artifacts/`` with every
build. ``report.json`` is rewritten after each recipe, so a rerun into the same directory with the
same model, target, evaluation data and metric reuses the finished rows (resumable).

Schema (version 1)::

    {"version": 1, "model": {"file", "sha256"}, "target", "metric", "eval": {"file", "sha256",
     "samples", "labels"}, "timing": {"runs", "threads"}, "max_drop", "latency_budget_ms",
     "rows": [{"recipe", "metric", "drop", "drop_ci95": [lo, hi], "latency_ms": {"median", "p90"},
               "size_bytes", "compile_s", "artifact", "scores": [per-sample metric]}],
     "pareto": [recipe, ...], "recommended": recipe | null, "reason": str}

``drop`` is fp32's metric minus the recipe's (positive: worse), its interval a paired bootstrap over
the evaluation samples.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgecompile.errors import RecipeError
from edgecompile.report.metrics import bootstrap_drop, eval_samples, read_eval, scorer
from edgecompile.runtime.manifest import sha256_file

SCHEMA = 1
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
    limit = 0.0 if max_drop is None else (max_drop if max_drop >= 0 else -max_drop / 100 * abs(base["metric"]))
    fit = [r for r in rows if r["drop"] <= limit and (budget_ms is None or _ms(r) <= budget_ms)]
    if not fit:
        return None, f"no recipe keeps the drop within {limit:.3g}"
    best = min(fit, key=_ms)
    return best["recipe"], (
        f"{best['recipe']} is the fastest recipe whose drop ({best['drop']:+.3g}, 95% CI "
        f"{best['drop_ci95'][0]:+.3g}..{best['drop_ci95'][1]:+.3g}) is within {limit:.3g}: "
        f"{_ms(best):.2f} ms against fp32's {_ms(base):.2f} ms ({_ms(base) / _ms(best):.2f}x)"
    )


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
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Measure every recipe (fp32 first, the baseline) and write the report; returns report.json's dict."""
    from edgecompile.api import compile as compile_model
    from edgecompile.frontend.spec import TensorSpec
    from edgecompile.runtime import load

    say = progress or (lambda *_: None)
    model, out_dir = Path(model), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recipes = ("fp32", *[r for r in recipes if r != "fp32"])
    arrays, labels = read_eval(eval_path)
    if not model.is_file():
        from edgecompile.errors import ModelLoadError

        raise ModelLoadError(f"model file not found: {model}")
    head = {
        "version": SCHEMA,
        "model": {"file": model.name, "sha256": sha256_file(model)},
        "target": target,
        "metric": metric,
        "eval": {"file": Path(eval_path).name, "sha256": sha256_file(Path(eval_path))},
        "timing": {"runs": runs, "threads": threads},
    }
    report_file = out_dir / "report.json"
    done: dict[str, dict] = {}
    if report_file.exists():
        try:
            old = json.loads(report_file.read_text())
            same = {**old, "eval": {k: old.get("eval", {}).get(k) for k in head["eval"]}}
            if all(same.get(k) == v for k, v in head.items()):
                done = {r["recipe"]: r for r in old.get("rows", [])}
        except (OSError, json.JSONDecodeError):
            done = {}
    rows: list[dict] = []
    ref_file = out_dir / "fp32_outputs.npy"
    reference = np.load(ref_file) if "fp32" in done and ref_file.exists() else None
    if reference is None:
        done = {}
    samples = score = None
    for k, recipe in enumerate(recipes):
        if recipe in done:
            rows.append({**done[recipe], "reused": True})
            say(f"{recipe}: reused", k + 1, len(recipes))
            continue
        say(f"{recipe}: compiling", k, len(recipes))
        t0 = time.perf_counter()
        art = compile_model(
            str(model), target, out_dir / "artifacts" / _slug(recipe), input_shapes=input_shapes,
            recipe=recipe, calib=None if recipe == "fp32" else calib,
        )  # fmt: skip
        compile_s = time.perf_counter() - t0
        m = load(art)
        if samples is None:
            specs = [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in m.inputs]
            samples = eval_samples(arrays, labels, specs)
            score = scorer(metric, labels)
        say(f"{recipe}: evaluating {len(samples)} samples", k, len(recipes))
        name = m.outputs[0]["name"]
        outs = np.stack([m.run(s)[name] for s in samples])
        if reference is None:
            reference = outs
            np.save(ref_file, outs)
        scores = np.array([score(o, i, r) for i, (o, r) in enumerate(zip(outs, reference))])
        say(f"{recipe}: timing", k, len(recipes))
        bench = m.benchmark(runs=runs, threads=threads, feeds=samples[0])
        rows.append(
            {
                "recipe": recipe,
                "metric": float(scores.mean()),
                "latency_ms": {"median": bench.median_ms, "p90": bench.p90_ms},
                "size_bytes": sum(f.stat().st_size for f in Path(art).iterdir() if f.is_file()),
                "compile_s": round(compile_s, 2),
                "artifact": str(Path(art).relative_to(out_dir)),
                "scores": [float(x) for x in scores],
            }
        )
        _finish(rows, head, labels is not None, max_drop, latency_budget_ms, report_file)
        say(f"{recipe}: done", k + 1, len(recipes))
    return _finish(rows, head, labels is not None, max_drop, latency_budget_ms, report_file)


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
