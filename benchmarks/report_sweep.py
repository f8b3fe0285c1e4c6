"""Wall time of a full default report sweep (7 recipes) of the real all-MiniLM-L6-v2 encoder, 128
evaluation emails (cosine against fp32) and 128 calibration emails from examples/minilm_spam,
batch 1, seq 128, without tuning. The goal: at most 10 minutes on a 2-core machine.

    python benchmarks/report_sweep.py [--out build/report_minilm] [--runs 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import ROOT


def main() -> int:
    from minilm_spam import data, encoder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "report_minilm")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    split = data.splits("small")
    tok = encoder.tokenizer()
    onnx_path = encoder.export(args.out / "minilm.onnx", tok)
    for name, texts in (("eval", split["test"][0][:128]), ("calib", split["calib"][0])):
        feeds = encoder.tokenize(tok, texts)
        np.savez(args.out / f"{name}.npz", **{k: v[:, None] for k, v in feeds.items()})  # [N, 1, 128]
    shapes = [a for n in encoder.INPUTS for a in ("--input-shape", f"{n}=1x{encoder.SEQ}")]
    cmd = [sys.executable, "-m", "edgecompile", "report", str(onnx_path), "--eval", str(args.out / "eval.npz"),
           "--calib", str(args.out / "calib.npz"), "--metric", "cosine", "--sweep", "--max-drop", "0.01",
           "--runs", str(args.runs), *shapes, "-o", str(args.out / "report")]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"\nfull default sweep: {time.perf_counter() - t0:.0f} s wall (goal: 600 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
