"""``report.md`` and a self-contained ``report.html`` (the Pareto plot and a per-layer sensitivity
bar chart per quantized recipe, as embedded PNGs) from ``report.json``'s dict
(:mod:`edgecompile.report.sweep`)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path


def _rows(report: dict) -> list[list[str]]:
    out = []
    for r in report["rows"]:
        lo, hi = r["drop_ci95"]
        marks = (
            ("recommended" if r["recipe"] == report["recommended"] else "")
            + (" pareto" if r["recipe"] in report["pareto"] else "")
            + (f" fix of {r['fix_of']}" if r.get("fix_of") else "")
        )
        out.append(
            [
                r["recipe"],
                f"{r['metric']:.4g}",
                f"{r['drop']:+.3g} [{lo:+.3g}, {hi:+.3g}]",
                f"{r['latency_ms']['median']:.3f}",
                f"{r['latency_ms']['p90']:.3f}",
                f"{r['size_bytes'] / 1e6:.2f}",
                "-" if r.get("memory_bytes") is None else f"{r['memory_bytes'] / 1e6:.2f}",
                "-" if r.get("energy_uj") is None else f"{r['energy_uj']:.4g}",
                f"{r['compile_s']:.1f}",
                marks.strip(),
            ]
        )
    return out


HEADER = [
    "recipe", "metric", "drop [95% CI]", "median ms", "p90 ms", "size MB", "memory MB", "energy uJ", "compile s", "",
]  # fmt: skip
WORST = 5  # layers listed per recipe in report.md
BARS = 12  # layers drawn per recipe in the HTML's bar chart


def _sensitivity_lines(report: dict) -> list[str]:
    lines = []
    for r in report["rows"]:
        sens = r.get("sensitivity")
        if not sens:
            continue
        worst = ", ".join(f"{s['layer']} ({s['kind']}) {s['drop']:+.3g}" for s in sens["layers"][:WORST])
        lines.append(f"- **{r['recipe']}** ({len(sens['layers'])} layers, {sens['samples']} samples): {worst}")
        fix = r.get("fix")
        if fix:
            tried = ", ".join(f"k={k}: {d:+.3g}" for k, d in fix["tried"])
            found = f"fix: {fix['recipe']}" if fix["recipe"] else f"no fix: {fix.get('why', '')}"
            lines.append(f"  - over the budget {fix['limit']:.3g}; {found}" + (f" (tried {tried})" if tried else ""))
    if lines:
        lines = ["Per-layer sensitivity (drop when only that layer is quantized, worst first):", "", *lines, ""]
    return lines


def _length_lines(report: dict) -> list[str]:
    """Median ms per input length, per recipe (``report --lengths`` on a ranged artifact)."""
    rows = [r for r in report["rows"] if (r.get("latency_ms") or {}).get("by_length")]
    if not rows:
        return []
    sizes = list(rows[0]["latency_ms"]["by_length"])
    lines = ["Median ms by input length (one ranged artifact per recipe):", "",
             "| recipe | " + " | ".join(sizes) + " |", "|---|" + "---|" * len(sizes)]  # fmt: skip
    for r in rows:
        by = r["latency_ms"]["by_length"]
        lines.append(f"| {r['recipe']} | " + " | ".join(f"{by[n]:.3f}" if n in by else "-" for n in sizes) + " |")
    return [*lines, ""]


def markdown(report: dict) -> str:
    t = report["timing"]
    lines = [
        f"# edgecompile report: {report['model']['file']} on {report['target']}",
        "",
        f"Metric `{report['metric']}` on {report['eval']['samples']} samples of {report['eval']['file']}; "
        f"latency: median of {t['runs']} runs, {t['threads']} thread(s), batch as compiled.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
        *("| " + " | ".join(row) + " |" for row in _rows(report)),
        "",
        f"**Recommended:** {report['recommended'] or 'none'}. {report['reason']}",
        "",
        *_length_lines(report),
        *_sensitivity_lines(report),
    ]
    return "\n".join(lines)


def pareto_png(report: dict) -> bytes:
    """Metric against median latency, the Pareto front joined and the recommendation ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    rows = report["rows"]
    for r in rows:
        on = r["recipe"] in report["pareto"]
        ax.scatter(r["latency_ms"]["median"], r["metric"], s=50, color="tab:blue" if on else "tab:gray", zorder=3)
        ax.annotate(r["recipe"], (r["latency_ms"]["median"], r["metric"]), fontsize=8, xytext=(5, 4),
                    textcoords="offset points")  # fmt: skip
    front = sorted((r for r in rows if r["recipe"] in report["pareto"]), key=lambda r: r["latency_ms"]["median"])
    ax.plot([r["latency_ms"]["median"] for r in front], [r["metric"] for r in front], color="tab:blue", lw=1)
    best = next((r for r in rows if r["recipe"] == report["recommended"]), None)
    if best is not None:
        ax.scatter(best["latency_ms"]["median"], best["metric"], s=220, facecolors="none", edgecolors="tab:red",
                   linewidths=2, zorder=4, label=f"recommended: {best['recipe']}")  # fmt: skip
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("median latency (ms)")
    ax.set_ylabel(report["metric"])
    ax.set_title(f"{report['model']['file']} on {report['target']}: accuracy vs latency")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def sensitivity_png(report: dict, row: dict) -> bytes:
    """Horizontal bars: the metric drop of the :data:`BARS` most sensitive layers of ``row``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = row["sensitivity"]["layers"][:BARS][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(layers) + 1.2), dpi=110)
    kept = set(row.get("kept_float", []))
    fixed = next((r.get("kept_float", []) for r in report["rows"] if r.get("fix_of") == row["recipe"]), [])
    kept |= set(fixed)
    colors = ["tab:orange" if s["layer"] in kept else "tab:blue" for s in layers]
    ax.barh([f"{s['layer']} ({s['kind']})" for s in layers], [s["drop"] for s in layers], color=colors)
    ax.set_xlabel(f"{report['metric']} drop with only this layer quantized")
    ax.set_title(f"{row['recipe']}: per-layer sensitivity" + (" (orange: kept float by the fix)" if fixed else ""),
                 fontsize=9)  # fmt: skip
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


def html_page(report: dict) -> str:
    png = base64.b64encode(pareto_png(report)).decode()
    bars = "".join(
        f'<h3>{html.escape(r["recipe"])}</h3><img class="sensitivity" alt="per-layer sensitivity of '
        f'{html.escape(r["recipe"])}" src="data:image/png;base64,{_b64(sensitivity_png(report, r))}">'
        for r in report["rows"]
        if r.get("sensitivity")
    )
    if bars:
        bars = "<h2>Per-layer sensitivity</h2><p>Metric drop when only that layer is quantized, worst first.</p>" + bars
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in _rows(report))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgecompile report: {html.escape(report["model"]["file"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}</style>
</head><body>
<h1>edgecompile report: {html.escape(report["model"]["file"])} on {html.escape(report["target"])}</h1>
<p>Metric <code>{html.escape(report["metric"])}</code> on {report["eval"]["samples"]} samples.</p>
<p id="recommendation"><b>Recommended:</b> {html.escape(str(report["recommended"]))}.
{html.escape(report["reason"])}</p>
<img id="pareto" alt="accuracy vs latency, Pareto front" src="data:image/png;base64,{png}">
<table id="rows"><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>
{bars}
</body></html>
"""


def write(report: dict, out_dir: str | Path) -> list[Path]:
    """Write report.md and report.html beside report.json; returns their paths."""
    out_dir = Path(out_dir)
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(markdown(report))
    page.write_text(html_page(report))
    return [md, page]
