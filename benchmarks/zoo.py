"""Model-zoo speed benchmark: edgecompile fp32 against ONNX Runtime and OpenVINO fp32 on CPU, six
architectures at realistic sizes (``zoo_models.py``), 1 thread, batch 1, all in one process.

Each model is defined in torch with seeded random weights, exported to ONNX (TorchScript exporter,
opset 17) and compiled from that file with ``edgecompile.compile(recipe="fp32", target=...)``. Per
model it prints: the compile time (and any compile-time warning), our outputs against ORT's (max
abs difference; a mismatch above ``--tol`` x the largest |ORT output| is flagged), the median
latency of ours, ORT and OpenVINO (``INFERENCE_PRECISION_HINT=f32``, 1 inference thread, 1 stream;
skipped with a note where ``openvino`` is not installed) over ``--runs`` calls, timed in three
alternating rounds so background load hits all three alike, the ratios ours/ORT and ours/OV
(below 1: ours faster), the profile's most expensive kernels (``--top``, five by default: share
of the run, ms per run, calls, GOP/s, schedule rule) and the share of kernels on the generic ``fallback`` schedule (the
goal: none above 5% of a run). A model that fails to export, compile or run is reported with the
error and the others still run. Then a summary table, and with ``--json`` the same as JSON.

    python benchmarks/zoo.py [--models bert-base,minilm,deit-s,dinov2-dpt,efficientformer-l1,mobilevit-xs]
                             [--runs 20] [--top 5] [--json zoo.json] [--keep DIR] [--tol 1e-3] [--target native]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
from _common import cpu_header, export, openvino_request, ort_session, sampler, time_engines, timed_compile
from zoo_models import MODELS, build

FALLBACK_LIMIT = 5.0  # % of a run: the issue's bound on any one fallback kernel


def versions() -> dict[str, str]:
    """Versions of the engines and of torch (those installed)."""
    import importlib.metadata as md

    out = {}
    for dist in ("edgecompile", "apache-tvm", "onnxruntime", "openvino", "torch"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _error(stage: str, e: BaseException) -> str:
    """``stage: Type: message`` with the message's last 40 lines (TVM errors carry long tracebacks)."""
    lines = str(e).strip().splitlines() or [""]
    return f"{stage}: {type(e).__name__}: " + "\n".join(lines[-40:])


def _say(msg: str) -> None:
    print(msg, flush=True)


# --- the three engines ----------------------------------------------------------------------


def compare(ours: list[np.ndarray], ref: list[np.ndarray], names: list[str], tol: float) -> tuple[list[dict], bool]:
    """Per output: max abs difference of ``ours`` from ``ref`` and relative to max |ref|; ok if at most ``tol``."""
    rows, ok = [], True
    for name, a, b in zip(names, ours, ref):
        if a.shape != b.shape:
            rows.append({"output": name, "error": f"shape {a.shape} vs ORT {b.shape}"})
            ok = False
            continue
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
        scale = float(np.max(np.abs(b))) or 1.0
        good = bool(np.isfinite(diff)) and diff <= tol * scale
        ok &= good
        rows.append({"output": name, "max_abs_diff": diff, "ref_max": scale, "rel": diff / scale, "ok": good})
    return rows, ok


# --- one model ------------------------------------------------------------------------------


def profile_summary(prof, top_n: int = 5) -> dict:
    """The ``top_n`` most expensive kernels and the fallback kernels' shares of a :class:`Profile`."""
    top = [
        {"name": k.name, "rule": k.rule, "share": 100 * k.share, "ms": k.total_ms, "calls": k.calls, "gops": k.gops}
        for k in prof.kernels[:top_n]
    ]
    fallback = [(k.name, 100 * k.share) for k in prof.kernels if k.rule == "fallback"]
    worst = max(fallback, key=lambda f: f[1], default=(None, 0.0))
    return {
        "run_ms": prof.run_ms,
        "outside_ms": prof.outside_ms,
        "kernels": len(prof.kernels),
        "top": top,
        "fallback_kernels": len(fallback),
        "fallback_total": sum(s for _, s in fallback),
        "fallback_max": worst[1],
        "fallback_max_kernel": worst[0],
    }


def print_profile(p: dict) -> None:
    _say(f"  profile: run {p['run_ms']:.2f} ms, {p['kernels']} kernels, outside kernels {p['outside_ms']:.2f} ms")
    _say(f"    {'share':>6} {'ms/run':>8} {'calls':>5} {'GOP/s':>7}  {'rule':<18} kernel")
    for k in p["top"]:
        gops = f"{k['gops']:7.1f}" if k["gops"] else f"{'-':>7}"
        _say(f"    {k['share']:5.1f}% {k['ms']:8.3f} {k['calls']:>5} {gops}  {k['rule'] or '-':<18} {k['name']}")
    if p["fallback_kernels"]:
        verdict = "OVER the 5% goal" if p["fallback_max"] > FALLBACK_LIMIT else "within the 5% goal"
        _say(
            f"  fallback: {p['fallback_kernels']} kernel(s), {p['fallback_total']:.1f}% of the run in all; largest "
            f"{p['fallback_max_kernel']} {p['fallback_max']:.1f}% ({verdict})"
        )
    else:
        _say("  fallback: no kernel on the fallback schedule")


def compile_model(path: Path, out: Path, target: str) -> tuple[Path, float, list[str]]:
    """Compile ``path`` (fp32) into ``out``: (artifact, seconds, the compile's warnings)."""
    from edgecompile.errors import EdgeCompileWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        art, secs = timed_compile(str(path), target=target, output=out, recipe="fp32", force=True)
    return art, secs, [str(w.message) for w in caught if issubclass(w.category, EdgeCompileWarning)]


def _ours(res: dict, path: Path, feeds: dict, ref: list, outputs: list[str], args, workdir: Path):
    """Compile, load, check and profile ours; returns the loaded model (None where a stage failed)."""
    import edgecompile

    key = res["key"]
    _say(f"compiling {key} ...")
    t0 = time.perf_counter()
    try:
        art, res["compile_s"], res["compile_warnings"] = compile_model(path, workdir / f"{key}-fp32", args.target)
    except Exception as e:  # reported; the zoo goes on
        res["status"], res["error"] = "compile failed", _error("compile", e)
        _say(f"  COMPILE FAILED after {time.perf_counter() - t0:.0f} s:\n    " + res["error"].replace("\n", "\n    "))
        return None
    _say(f"compiled {key} ({res['compile_s']:.1f} s)")
    for w in res["compile_warnings"]:
        _say(f"  warning: {w}")
    try:
        model = edgecompile.load(art)
        got = model.run(feeds, threads=1)
        res["check"], ok = compare([got[o] for o in outputs], ref, outputs, args.tol)
    except Exception as e:
        res["status"], res["error"] = "run failed", _error("run", e)
        _say("  RUN FAILED:\n    " + res["error"].replace("\n", "\n    "))
        return None
    for c in res["check"]:
        if "error" in c:
            _say(f"  check {c['output']}: MISMATCH, {c['error']}")
        else:
            flag = "ok" if c["ok"] else f"MISMATCH (> {args.tol:g} x max |ORT|)"
            _say(
                f"  check {c['output']} vs ORT: max abs diff {c['max_abs_diff']:.3g} (max |ORT| {c['ref_max']:.3g},"
                f" relative {c['rel']:.2g}) {flag}"
            )
    res["status"] = "ok" if ok else "MISMATCH"
    return model


def _openvino(res: dict, path: Path, feeds: dict, ref: list, outputs: list[str], tol: float):
    """OpenVINO's sampler for ``path`` after checking its outputs against ORT's (recorded in ``res``),
    or None where OpenVINO is not importable or fails (the note or error recorded)."""
    try:
        request, info = openvino_request(path)
    except Exception as e:
        res["ov_error"] = _error("openvino", e)
        _say("  OpenVINO failed: " + res["ov_error"])
        return None
    if request is None:
        res["ov_note"] = info
        _say(f"  note: {info}")
        return None
    res["ov_precision"] = info
    names = {p.get_any_name() for p in request.model_inputs}
    ov_feeds = {k: v for k, v in feeds.items() if k in names}
    result = request.infer(ov_feeds)
    res["ov_check"], _ = compare([np.asarray(result[i]) for i in range(len(outputs))], ref, outputs, tol)
    worst = max((c.get("rel", float("inf")) for c in res["ov_check"]), default=0.0)
    _say(f"  OpenVINO (precision {info}) vs ORT: max relative diff {worst:.2g}")
    return sampler(lambda: request.infer(ov_feeds))


def bench_model(key: str, args, workdir: Path) -> dict:
    """Export, compile, check, time and profile the zoo model ``key``; failures are recorded in the
    result (``status``, ``error``), never raised."""
    from edgecompile.runtime import set_threads

    res: dict = {"key": key, "status": "ok"}
    _say(f"\n=== {key} ===\nexporting {key} ...")
    try:
        zm = build(key)
        res.update(label=zm.label, shape=zm.shape)
        with warnings.catch_warnings():  # the tracer's notes on constant shapes: they are constant here
            warnings.filterwarnings("ignore", message=".*might cause the trace to be incorrect")
            path = export(zm.module, zm.inputs, workdir / f"{key}.onnx", zm.input_names, zm.output_names)
        feeds = {n: t.numpy() for n, t in zip(zm.input_names, zm.inputs)}
        outputs = zm.output_names
        del zm
        sess = ort_session(path, 1)
        ref = sess.run(outputs, feeds)
    except Exception as e:
        res["status"], res["error"] = "export failed", _error("export", e)
        _say("  EXPORT FAILED:\n    " + res["error"])
        return res
    res["onnx_mb"] = path.stat().st_size / 1e6
    model = _ours(res, path, feeds, ref, outputs, args, workdir)

    samplers = {}
    if model is not None:
        set_threads(1)
        samplers["ours"] = lambda: model.benchmark(runs=1, warmup=0, feeds=feeds).median_ms
    samplers["ort"] = sampler(lambda: sess.run(None, feeds))
    ov_sample = _openvino(res, path, feeds, ref, outputs, args.tol)
    if ov_sample is not None:
        samplers["ov"] = ov_sample

    _say(f"timing {key} ({args.runs} runs each, 1 thread: {', '.join(samplers)}) ...")
    times = time_engines(samplers, args.runs)
    for name, ts in times.items():
        res[f"{name}_ms"] = statistics.median(ts)
        res[f"{name}_min_ms"] = min(ts)
    line = f"  median ms: ours {_ms(res.get('ours_ms'))}, ORT {_ms(res['ort_ms'])}, OpenVINO {_ms(res.get('ov_ms'))}"
    _say(line + f"; ours/ORT {_ratio(res, 'ort')}, ours/OV {_ratio(res, 'ov')}")
    if model is not None:
        _say(f"profiling {key} ...")
        try:
            res["profile"] = profile_summary(model.profile(threads=1, feeds=feeds, runs=min(args.runs, 10)), args.top)
            print_profile(res["profile"])
        except Exception as e:
            res["profile_error"] = _error("profile", e)
            _say("  profile failed: " + res["profile_error"])
    return res  # the sessions and the model go with this frame


# --- summary --------------------------------------------------------------------------------


def _ms(v) -> str:
    return f"{v:.2f}" if v is not None else "-"


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def _ratio(res: dict, peer: str) -> str:
    a, b = res.get("ours_ms"), res.get(f"{peer}_ms")
    return f"{a / b:.2f}" if a is not None and b else "-"


def summary(results: list[dict], runs: int) -> None:
    _say(f"\nbatch 1, 1 thread, median of {runs} runs (ms); ratio = ours / peer (< 1: ours faster)")
    head = (
        f"{'model':<19} {'input':<15} {'ours':>8} {'ORT':>8} {'OV':>8} {'/ORT':>5} {'/OV':>5} {'fb max%':>7}"
        f" {'compile s':>9} {'status':<14} top kernel"
    )
    _say(head)
    _say("-" * len(head))
    for r in results:
        p = r.get("profile") or {}
        top = p["top"][0] if p.get("top") else None
        top_s = f"{_short(top['name'])} ({top['rule']}, {top['share']:.0f}%)" if top else "-"
        fb = f"{p['fallback_max']:.1f}" if p else "-"
        cs = f"{r['compile_s']:.0f}" if r.get("compile_s") else "-"
        _say(
            f"{r['key']:<19} {r.get('shape', '-'):<15} {_ms(r.get('ours_ms')):>8} {_ms(r.get('ort_ms')):>8}"
            f" {_ms(r.get('ov_ms')):>8} {_ratio(r, 'ort'):>5} {_ratio(r, 'ov'):>5} {fb:>7} {cs:>9} {r['status']:<14}"
            f" {top_s}"
        )
    bad = [r for r in results if r["status"] != "ok"]
    over = [r for r in results if (r.get("profile") or {}).get("fallback_max", 0) > FALLBACK_LIMIT]
    if bad:
        _say("\nnot ok: " + "; ".join(f"{r['key']}: {r.get('error', r['status']).splitlines()[0]}" for r in bad))
    if over:
        _say("fallback kernel above 5% of the run: " + ", ".join(r["key"] for r in over))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--runs", type=int, default=20, help="timed calls per engine and model")
    ap.add_argument("--tol", type=float, default=1e-3, help="max abs diff allowed, relative to max |ORT output|")
    ap.add_argument("--target", default="native")
    ap.add_argument("--top", type=int, default=5, help="kernels of each profile to print")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--keep", type=Path, help="export and compile into DIR and keep it (default: a temp folder)")
    args = ap.parse_args()
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(MODELS)}")
    import torch

    torch.set_num_threads(1)  # no idle torch workers competing with the timed engines

    host = cpu_header()
    flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in host["flags"].items())
    _say(f"CPU: {host['cpu']} ({host['cpus']} CPUs usable); {flags}")
    ver = versions()
    _say("versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()))
    _say(f"batch 1, 1 thread, fp32, {args.runs} timed runs per engine, accuracy tolerance {args.tol:g} x max |ORT|")
    with tempfile.TemporaryDirectory(prefix="ec-zoo-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = []
        for key in keys:
            try:
                results.append(bench_model(key, args, workdir))
                gc.collect()  # the previous model's sessions before the next model's
            except Exception as e:  # a bug in one model's bench must not lose the others
                traceback.print_exc()
                results.append({"key": key, "status": "failed", "error": _error("bench", e)})
    summary(results, args.runs)
    if args.json:
        args.json.write_text(json.dumps({**host, "versions": ver, "runs": args.runs, "results": results}, indent=1))
        _say(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
