"""The digits ViT end to end: train on scikit-learn's digits (seconds on one core), export to ONNX,
compile for this machine with each recipe, and evaluate every build on the 600 held-out images
against ONNX Runtime fp32 and its int8 quantizers (``quantize_dynamic``; ``quantize_static`` QDQ
on the same 128 calibration images).

    python examples/digits_vit/run.py [--recipes fp32,int8,int8-integer-only,int8-integer-only:ibert]
                                      [--runs 100] [--workdir build/digits_vit]

Printed per engine: top-1 accuracy on the held-out split, its change against fp32, agreement of the
predictions with fp32, and latency at batch 1 on 1 thread (median of ``--runs``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # examples/: models.py, digits_vit

from digits_vit.digits import accuracy, splits, train  # noqa: E402

DEFAULT_RECIPES = ("fp32", "int8", "int8-integer-only", "int8-integer-only:ibert")


@dataclass
class Row:
    engine: str
    accuracy: float
    agreement: float
    latency_ms: float | None
    compile_s: float | None = None


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ort_int8(path: Path, samples: list[dict], workdir: Path) -> tuple[Path, Path]:
    """ONNX Runtime's two int8 quantizers of ``path``: (dynamic, static QDQ calibrated on ``samples``)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    dyn = workdir / f"{path.stem}.dyn.onnx"
    quantize_dynamic(str(path), str(dyn), weight_type=QuantType.QInt8)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(samples)

        def get_next(self):
            return next(self.it, None)

    qdq = workdir / f"{path.stem}.qdq.onnx"
    quantize_static(
        str(path), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return dyn, qdq


def evaluate(recipes=DEFAULT_RECIPES, workdir: Path = Path("build/digits_vit"), runs: int = 100, say=_say) -> list[Row]:
    """Rows for each edgecompile recipe, then ORT fp32, dynamic int8 and QDQ int8 (``runs=0``: no timing)."""
    import onnxruntime as ort
    import torch
    from models import export_onnx

    import edgecompile
    from edgecompile.runtime.model import time_calls

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = splits()
    say(f"train: ViT on {len(data['y_train'])} digits")
    model = train(data)
    path = workdir / "digits_vit.onnx"
    export_onnx(model, (torch.from_numpy(data["x_test"][:1]),), path, ["pixel_values"], ["logits"], dynamo=False)
    calib = [{"pixel_values": x[None]} for x in data["x_calib"]]
    x_test, y_test = data["x_test"], data["y_test"]
    one = {"pixel_values": x_test[:1]}

    preds, rows = {}, []

    def add(name, logits, latency, compile_s=None):
        preds[name] = logits.argmax(-1)
        ref = next(iter(preds.values()))
        rows.append(Row(name, accuracy(logits, y_test), float((preds[name] == ref).mean() * 100), latency, compile_s))

    for rec in recipes:
        say(f"compile: --recipe {rec}")
        t0 = time.perf_counter()
        art = edgecompile.compile(
            path, output=workdir / f"ec-{rec.replace(':', '_')}", recipe=rec, calib=None if rec == "fp32" else calib
        )
        compile_s = time.perf_counter() - t0
        m = edgecompile.load(art)
        logits = np.concatenate([m.run({"pixel_values": x[None]})["logits"] for x in x_test])
        lat = m.benchmark(runs=runs, threads=1, feeds=one).median_ms if runs else None
        add(f"edgecompile {rec}", logits, lat, compile_s)
    say("ONNX Runtime: fp32, quantize_dynamic, quantize_static (QDQ)")
    dyn, qdq = ort_int8(path, calib, workdir)
    for name, p in (("ORT fp32", path), ("ORT dynamic int8", dyn), ("ORT QDQ int8", qdq)):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        s = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        logits = np.concatenate([s.run(None, {"pixel_values": x[None]})[0] for x in x_test])
        lat = statistics.median(time_calls(lambda s=s: s.run(None, one), runs, warmup=5)) if runs else None
        add(name, logits, lat)
    return rows


def table(rows: list[Row], n_test: int) -> str:
    base = rows[0]
    lines = [
        f"digits ViT, top-1 on {n_test} held-out images (128 calibration images), batch 1, 1 thread",
        "",
        "| engine | top-1 % | vs fp32 | agreement % | 1-thread ms | compile s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.engine} | {r.accuracy:.2f} | {r.accuracy - base.accuracy:+.2f} | {r.agreement:.2f} | "
            f"{f'{r.latency_ms:.3f}' if r.latency_ms else '-'} | {f'{r.compile_s:.1f}' if r.compile_s else '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default=",".join(DEFAULT_RECIPES), help="comma-separated edgecompile recipes")
    ap.add_argument("--runs", type=int, default=100, help="timed runs per engine (0: no latency)")
    ap.add_argument("--workdir", type=Path, default=Path("build/digits_vit"))
    args = ap.parse_args(argv)
    rows = evaluate(tuple(args.recipes.split(",")), args.workdir, args.runs)
    print(table(rows, 600))
    return 0


if __name__ == "__main__":
    sys.exit(main())
