"""edgecompile's int8 and integer-only recipes vs ONNX Runtime's int8 quantizers, in one process:
accuracy, speed, size, and calibration memory.

- Accuracy: the digits ViT (examples/digits_vit, trained here on scikit-learn's digits, 600
  held-out images): top-1 of fp32, each edgecompile recipe (int8, and the integer-only recipes
  with I-ViT's and I-BERT's nonlinears), ORT `quantize_static` (QDQ, the same 128 calibration
  images) and ORT `quantize_dynamic`. The MiniLM-L6-sized encoder (random seeded
  weights): mean / min cosine of the last hidden state against fp32 on 16 held-out inputs.
- Speed: the MiniLM-L6-sized encoder, batch 1, seq 128, 1 thread and all threads: median latency of
  edgecompile fp32 and each recipe, ORT fp32, dynamic int8 and QDQ int8, and each one's ratio to
  ORT fp32, ORT dynamic, ORT QDQ and edgecompile int8 (integer ops against the float nonlinears).
- Size: each artifact against the fp32 artifact.
- Calibration memory: peak RSS of compiling the int8 MiniLM-sized encoder with 32 and with 512
  calibration samples, each in a fresh process (observers keep histograms, not activations).

    python benchmarks/int8_vs_onnxruntime.py [--runs 30] [--skip-memory] [--recipes int8,int8-integer-only]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (
    SEQ,
    artifact_mb,
    cosine,
    minilm_onnx,
    ort_int8,
    ort_ms,
    ort_session,
    stacked,
    text_samples,
    thread_counts,
    timed_compile,
)


def digits_table(tmp: Path, recipes: list[str]) -> None:
    from digits_vit.run import evaluate, table

    print()
    print(table(evaluate(("fp32", *recipes), tmp / "digits", runs=0), 600))


def minilm_tables(tmp: Path, runs: int, recipes: list[str]) -> None:
    import edgecompile

    path = minilm_onnx(tmp)
    calib = text_samples(32, seed=1)
    held_out = text_samples(16, seed=2)
    fp32, fp32_s = timed_compile(path, output=tmp / "m-fp32")
    compile_s = {"fp32": fp32_s}
    arts = {}
    for rec in recipes:
        arts[rec], compile_s[rec] = timed_compile(path, output=tmp / f"m-{rec}", recipe=rec, calib=stacked(calib))
    dyn, qdq = ort_int8(path, calib, tmp)
    F = edgecompile.load(fp32)
    models = {rec: edgecompile.load(a) for rec, a in arts.items()}

    print(f"\nMiniLM-L6-sized encoder, last_hidden_state cosine vs fp32 on {len(held_out)} held-out inputs")
    ref = [F.run(s)["last_hidden_state"] for s in held_out]
    outs = {f"edgecompile {rec}": [m.run(s)["last_hidden_state"] for s in held_out] for rec, m in models.items()}
    for name, p in (("ORT qdq-int8", qdq), ("ORT dyn-int8", dyn)):
        s = ort_session(p)
        outs[name] = [s.run(["last_hidden_state"], x)[0] for x in held_out]
    for name, o in outs.items():
        c = [cosine(a, b) for a, b in zip(ref, o)]
        print(f"  {name:<40} mean {np.mean(c):.5f}  min {np.min(c):.5f}")

    feeds = held_out[0]
    print(f"\nMiniLM-L6-sized, batch 1, seq {SEQ}, median of {runs} runs (ms), engines timed in turn")
    for threads in thread_counts():
        ms = {"ORT fp32": ort_ms(path, feeds, threads, runs)}
        ms["ORT dyn-int8"] = ort_ms(dyn, feeds, threads, runs)
        ms["ORT qdq-int8"] = ort_ms(qdq, feeds, threads, runs)
        ms["edgecompile fp32"] = F.benchmark(runs=runs, threads=threads, feeds=feeds).median_ms
        for rec, m in models.items():
            ms[f"edgecompile {rec}"] = m.benchmark(runs=runs, threads=threads, feeds=feeds).median_ms
        base = ms.get("edgecompile int8")
        print(f"  {threads} thread(s): {'ms':>8} {'/ORT fp32':>10} {'/ORT dyn':>9} {'/ORT qdq':>9} {'/ec int8':>9}")
        for name, t in ms.items():
            vs_int8 = f"{t / base:9.2f}" if base else f"{'-':>9}"
            print(
                f"  {name:<38} {t:8.2f} {t / ms['ORT fp32']:10.2f} {t / ms['ORT dyn-int8']:9.2f}"
                f" {t / ms['ORT qdq-int8']:9.2f} {vs_int8}"
            )
    sf = artifact_mb(fp32)
    print(f"\nartifact size and compile time (calibration on {len(calib)} samples included)")
    print(f"  {'fp32':<30} {sf:6.1f} MB          {compile_s['fp32']:5.1f} s")
    for rec, a in arts.items():
        size = artifact_mb(a)
        print(f"  {rec:<30} {size:6.1f} MB ({size / sf:.2f}x) {compile_s[rec]:5.1f} s")


def _status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process in MB (ru_maxrss would carry the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def calibration_memory(path: Path, n: int) -> None:
    """(child process) compile the int8 ONNX model at ``path`` with n samples; print peak RSS."""
    import edgecompile

    with tempfile.TemporaryDirectory() as tmp:
        before = _status_mb("VmRSS")
        t = time.perf_counter()
        edgecompile.compile(path, output=Path(tmp) / "q", recipe="int8", calib=iter(text_samples(n, seed=3)))
        print(f"{n} {before:.0f} {_status_mb('VmHWM'):.0f} {time.perf_counter() - t:.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument(
        "--recipes",
        default="int8,int8-integer-only,int8-integer-only:ibert",
        help="edgecompile recipes to compare, comma-separated (default: %(default)s)",
    )
    ap.add_argument("--calibration-memory", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.calibration_memory:
        calibration_memory(Path(args.calibration_memory[0]), int(args.calibration_memory[1]))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        recipes = [r for r in args.recipes.split(",") if r]
        digits_table(Path(tmp), recipes)
        minilm_tables(Path(tmp), args.runs, recipes)
        if not args.skip_memory:
            print("\ncalibration memory: int8 compile of the MiniLM-L6-sized ONNX file in a fresh process")
            for n in (32, 512):
                cmd = [sys.executable, __file__, "--calibration-memory", str(Path(tmp) / "minilm.onnx"), str(n)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
                print(f"  {out[0]:>4} samples: peak RSS {out[2]} MB (before compiling: {out[1]} MB), {out[3]} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
