"""Quantization on real models nobody here made: edgecompile's recipes against ONNX Runtime's
``quantize_dynamic`` on the models of ``models.py``, with real inputs, at 1 thread.

For each model: ORT fp32 is the reference; fidelity on the held-out inputs (cosine of the sentence
embedding, top-1 agreement of the logits, Pearson correlation of a dense map, or the character
agreement of a recognised text) of ORT
``quantize_dynamic`` (its defaults: int8 weights, activations quantized per tensor at run time)
and of edgecompile fp32, ``int8:act=static``,
``int8`` (``act=auto``, the default: run-time row scales where calibration shows outlier rows) and
``int8-integer-only``, each calibrated on the model's calibration inputs; median latency of one
held-out input over 3 rounds of ``--runs``; compile time. Progress to stderr, the table to stdout.

    python examples/real_zoo/run.py [--models mpnet-base,efficientnet-lite0,dinov2-s-focus,ppocrv4-rec] [--runs 10]
                                    [--recipe int8 --recipe int8:max_drop=1%,metric=pearson ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import MODELS, ZooModel, ctc_text  # noqa: E402

RECIPES = ("fp32", "int8:act=static", "int8", "int8-integer-only")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _edit_distance(a: list, b: list) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def fidelity(metric: str, got: np.ndarray, ref: np.ndarray) -> float:
    """Agreement of ``got`` with the fp32 reference ``ref``: top-1 (1 or 0), Pearson r, cosine, or
    (``ctc``) the character agreement of the CTC-decoded texts, 1 - edit distance / reference length."""
    if metric == "ctc":
        want = ctc_text(ref)
        return 1.0 - _edit_distance(ctc_text(got), want) / max(len(want), 1)
    a, b = got.ravel().astype(np.float64), ref.ravel().astype(np.float64)
    if metric == "top1":
        return float(a.argmax() == b.argmax())
    if metric == "pearson":
        return float(np.corrcoef(a, b)[0, 1])
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _ort(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _latency(call, runs: int) -> float:
    rounds = []
    for _ in range(3):
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            call()
            times.append((time.perf_counter() - t) * 1e3)
        rounds.append(statistics.median(times))
    return statistics.median(rounds)


def evaluate(zm: ZooModel, runs: int, work: Path, recipes=RECIPES) -> list[dict]:
    """One row per engine: name, fidelity min / mean over the held-out inputs, ms, compile s."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import edgecompile

    f32 = _ort(zm.onnx)
    refs = [f32.run([zm.output], f)[0] for f in zm.held_out]
    feed = zm.held_out[0]
    rows = [{"engine": "ORT fp32", "scores": [1.0], "ms": _latency(lambda: f32.run(None, feed), runs), "compile": None}]
    q8, engine = work / f"{zm.name}.int8.onnx", "ORT quantize_dynamic"
    try:
        quantize_dynamic(str(zm.onnx), str(q8), weight_type=QuantType.QInt8)
    except ValueError:  # e.g. weights in Constant nodes (Paddle2ONNX): ORT's own pre-processing first
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre, engine = work / f"{zm.name}.pre.onnx", "ORT quantize_dynamic (after quant_pre_process)"
        quant_pre_process(str(zm.onnx), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(q8), weight_type=QuantType.QInt8)
    ortq = _ort(q8)
    rows.append({"engine": engine, "scores": [fidelity(zm.metric, ortq.run([zm.output], f)[0], r)
                 for f, r in zip(zm.held_out, refs)], "ms": _latency(lambda: ortq.run(None, feed), runs),
                 "compile": None})  # fmt: skip
    calib = work / f"{zm.name}-calib.npz"
    np.savez(calib, **{k: np.stack([c[k] for c in zm.calib]) for k in zm.calib[0]})
    shapes = {k: tuple(v.shape) for k, v in feed.items()}
    for recipe in recipes:
        _say(f"{zm.name}: compiling {recipe}")
        t = time.perf_counter()
        art = edgecompile.compile(
            zm.onnx, output=work / f"{zm.name}-{recipe.replace(':', '-').replace('=', '-')}", recipe=recipe,
            input_shapes=shapes, calib=calib if recipe.startswith("int8") else None, force=True,
        )  # fmt: skip
        secs = time.perf_counter() - t
        m = edgecompile.load(art)
        scores = [fidelity(zm.metric, m.run(f)[zm.output], r) for f, r in zip(zm.held_out, refs)]
        ms = statistics.median(m.benchmark(runs=runs, threads=1, feeds=feed).median_ms for _ in range(3))
        q = m.manifest.get("quantization") or {}
        rows.append({"engine": f"edgecompile {recipe}", "scores": scores, "ms": ms, "compile": secs,
                     "dynamic": len(q.get("dynamic", [])), "float": len(q.get("kept_float", []))})  # fmt: skip
    return rows


def table(zm: ZooModel, rows: list[dict]) -> str:
    metric = {"top1": "top-1 agreement", "pearson": "Pearson r", "ctc": "text agreement"}.get(zm.metric, "cosine")
    lines = [
        f"### {zm.label}",
        f"{metric} with ORT fp32 on {len(zm.held_out)} held-out inputs ({len(zm.calib)} calibration inputs)",
        "",
        f"| engine | {metric} min | mean | ms (1 thread) | compile s | dynamic layers | float layers |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        comp = "-" if r["compile"] is None else f"{r['compile']:.0f}"
        lines.append(
            f"| {r['engine']} | {min(r['scores']):.4f} | {np.mean(r['scores']):.4f} | {r['ms']:.1f} | {comp} | "
            f"{r.get('dynamic', '-')} | {r.get('float', '-')} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--runs", type=int, default=10, help="timed runs per round (3 rounds)")
    ap.add_argument(
        "--recipe", action="append", help=f"an edgecompile recipe, repeatable (default: {' '.join(RECIPES)})"
    )
    args = ap.parse_args(argv)
    from edgecompile.runtime.hostinfo import cpu_name

    print(f"CPU: {cpu_name()}, 1 thread\n")
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models.split(","):
            if key not in MODELS:
                ap.error(f"unknown model {key!r}; choose from {', '.join(MODELS)}")
            _say(f"{key}: loading and exporting")
            zm = MODELS[key]()
            rows = evaluate(zm, args.runs, Path(tmp), tuple(args.recipe or RECIPES))
            print(table(zm, rows) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
