"""``edgecompile report --compare A/report.json B/report.json``: what changed between two runs.

Setting changes (model, target, metric, evaluation data, timing) come first, as they explain the
rest; then one line per recipe in either run: metric, drop, median latency (B/A) and energy, and
recipes only one run has; then the recommendation of each.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgecompile.errors import EdgeCompileError

SETTINGS = ("model", "target", "metric", "eval", "timing", "max_drop", "latency_budget_ms")


class CompareError(EdgeCompileError):
    """A report file that cannot be compared."""


def read_report(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        rep = json.loads(path.read_text())
    except FileNotFoundError:
        raise CompareError(f"no report at {path}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise CompareError(f"{path} is not a report.json: {e}") from e
    if not isinstance(rep, dict) or "rows" not in rep or "version" not in rep:
        raise CompareError(f"{path} is not a report.json (no version/rows)")
    return rep


def _settings(rep: dict, key: str):
    value = rep.get(key)
    if key == "eval" and isinstance(value, dict):
        return {k: value.get(k) for k in ("file", "sha256", "samples")}
    if key == "model" and isinstance(value, dict):
        return value.get("sha256")
    return value


def _fmt(x, spec: str = ".4g") -> str:
    return "-" if x is None else format(x, spec)


def compare(a: dict, b: dict, names: tuple[str, str] = ("A", "B")) -> str:
    """Markdown describing how report ``b`` differs from report ``a``."""
    lines = [f"# edgecompile report comparison: {names[0]} -> {names[1]}", ""]
    changed = [k for k in SETTINGS if _settings(a, k) != _settings(b, k)]
    for k in changed:
        lines.append(f"- {k} changed: {json.dumps(_settings(a, k))} -> {json.dumps(_settings(b, k))}")
    if not changed:
        lines.append("- same model, target, metric, evaluation data and timing settings")
    lines += ["", "| recipe | metric A -> B | drop A -> B | median ms A -> B | B/A | energy uJ A -> B |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    ra = {r["recipe"]: r for r in a["rows"]}
    rb = {r["recipe"]: r for r in b["rows"]}
    for recipe in [*ra, *(r for r in rb if r not in ra)]:
        x, y = ra.get(recipe), rb.get(recipe)
        if x is None or y is None:
            lines.append(f"| {recipe} | only in {names[1] if x is None else names[0]} |  |  |  |  |")
            continue
        ms_a, ms_b = x["latency_ms"]["median"], y["latency_ms"]["median"]
        lines.append(
            f"| {recipe} | {x['metric']:.4g} -> {y['metric']:.4g} | {x['drop']:+.3g} -> {y['drop']:+.3g} "
            f"| {ms_a:.3f} -> {ms_b:.3f} | {ms_b / ms_a:.2f}x "
            f"| {_fmt(x.get('energy_uj'))} -> {_fmt(y.get('energy_uj'))} |"
        )
    lines += ["", f"Recommended: {a.get('recommended')} -> {b.get('recommended')}"]
    if a.get("recommended") != b.get("recommended"):
        lines.append(f"- {names[1]}: {b.get('reason', '')}")
    return "\n".join(lines) + "\n"
