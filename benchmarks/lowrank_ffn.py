"""The lowrank recipe: FFN latency and size against dense, whitened vs plain SVD, and the
accuracy-vs-ratio curve on the digits ViT, in one process.

- FFN latency, batch 1, seq 128, 1 thread: the FFN's two linear layers (up and down projection)
  dense against factorized at ``ratio=0.5`` (rank ``0.5 r*``, rounded to the GEMM tile width as
  the recipe does), for the MiniLM-sized
  (384 <-> 1536) and BERT-base-sized (768 <-> 3072) shapes; medians of ``--runs`` calls.
- Whole models: the MiniLM-sized encoder compiled fp32 and ``lowrank:ratio=0.5`` (random seeded
  weights: latency and size only), and with ``+int8`` on top.
- Accuracy (digits ViT, 600 held-out images, 128 calibration images): top-1 and relative logit
  error for whitened and plain SVD at ratios 0.25-0.75, ``max_drop=1%``, and
  ``lowrank:ratio=0.5,layers=all-linear+int8`` with its weight bytes against fp32.

    python benchmarks/lowrank_ffn.py [--runs 30] [--skip-models]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from _common import (
    SEQ,
    artifact_mb,
    digits_vit_onnx,
    host_profile,
    host_vm,
    median_ms,
    minilm_onnx,
    text_samples,
)


def ffn_table(runs: int) -> None:
    import tvm
    from tvm import relax

    from edgecompile.api import gemm_tile
    from edgecompile.lowrank.factorize import breakeven_rank, round_rank
    from edgecompile.runtime import set_threads

    host = host_profile("native")
    tile = gemm_tile(host)  # the recipe's default rank multiple
    set_threads(1)
    rng = np.random.default_rng(0)

    def timed(widths_list) -> float:
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((SEQ, widths_list[0][0]), "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = x
                for widths in widths_list:
                    for a, b in zip(widths, widths[1:]):
                        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
                        y = bb.emit(relax.op.matmul(y, relax.const(w)))
                    if widths is widths_list[0]:
                        y = bb.emit(relax.op.nn.gelu(y))
                out = bb.emit_output(y)
            bb.emit_func_output(out)
        vm = host_vm(bb.get(), host)
        arg = tvm.runtime.tensor(rng.standard_normal((SEQ, widths_list[0][0])).astype(np.float32))
        return median_ms(lambda: vm["main"](arg), runs)

    print(f"\nFFN (up, GELU, down), seq {SEQ}, 1 thread, median of {runs} (ms)")
    print(f"  {'shape':<14} {'dense':>8} {'ratio':>6} {'ranks':>9} {'factored':>9} {'x dense':>8} {'params':>7}")
    for d, f in ((384, 1536), (768, 3072)):
        dense = timed([(d, f), (f, d)])
        for ratio in (0.25, 0.5, 0.75):
            r = round_rank(ratio * breakeven_rank(d, f), tile, d, f)
            fac = timed([(d, r, f), (f, r, d)])
            print(
                f"  {f'{d}<->{f}':<14} {dense:8.3f} {ratio:6.2f} {r:>9} {fac:9.3f} {fac / dense:8.2f}"
                f" {r * (d + f) / (d * f):7.2f}"
            )


def model_table(tmp: Path, runs: int) -> None:
    import edgecompile

    path = minilm_onnx(tmp)
    calib = text_samples(32, seed=1)
    print(f"\nMiniLM-L6-sized encoder (random weights), seq {SEQ}, 1 thread, median of {runs}")
    base = None
    for recipe in (
        "fp32", "lowrank:ratio=0.5", "int8", "lowrank:ratio=0.5+int8", "lowrank:ratio=0.5,layers=all-linear+int8",
    ):  # fmt: skip
        art = edgecompile.compile(
            path, output=tmp / recipe.replace(":", "_"), recipe=recipe, calib=None if recipe == "fp32" else calib
        )
        m = edgecompile.load(art)
        ms = m.benchmark(runs=runs, threads=1, feeds=calib[0]).median_ms
        size = artifact_mb(art)
        base = base or (ms, size)
        print(f"  {recipe:<24} {ms:8.2f} ms ({ms / base[0]:.2f}x)  {size:6.1f} MB ({size / base[1]:.2f}x)")


def digits_table(tmp: Path) -> None:
    from digits_vit.digits import accuracy

    import edgecompile

    data, path, calib = digits_vit_onnx(tmp)

    def evaluate(art):
        m = edgecompile.load(art)
        return np.concatenate([m.run({"pixel_values": x[None]})["logits"] for x in data["x_test"]])

    ref = evaluate(edgecompile.compile(path, output=tmp / "d-fp32"))
    base = accuracy(ref, data["y_test"])
    print(f"\ndigits ViT, 600 held-out images, fp32 top-1 {base:.2f}% (FFN layers; gate off to see the curve)")
    print(f"  {'recipe':<48} {'top-1':>7} {'drop':>6} {'logit err':>9} {'FFN params':>10}")
    # ranks in multiples of 8, not the 24-wide AVX2 tile: this model's break-even rank is 43
    recipes = [f"lowrank:ratio={r},gate=off,multiple=8" for r in (0.25, 0.375, 0.5, 0.75)]
    recipes += [f"lowrank:ratio={r},gate=off,multiple=8 (plain SVD)" for r in (0.25, 0.5, 0.75)]
    recipes += [
        "lowrank:max_drop=1%,gate=off,multiple=4",
        "lowrank:ratio=0.5,gate=off,multiple=8,layers=all-linear+int8",
    ]
    for i, label in enumerate(recipes):
        recipe, plain = label.replace(" (plain SVD)", ""), label.endswith("(plain SVD)")
        art = edgecompile.compile(path, output=tmp / f"d-{i}", recipe=recipe, calib=None if plain else calib)
        out = evaluate(art)
        acc = accuracy(out, data["y_test"])
        err = np.linalg.norm(out - ref) / np.linalg.norm(ref)
        import json

        lr = json.loads((Path(art) / "manifest.json").read_text())["lowrank"]
        ratio = lr["params_after"] / lr["params_before"]
        print(f"  {label:<48} {acc:6.2f}% {acc - base:+6.2f} {err:9.4f} {ratio:9.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--skip-models", action="store_true", help="only the FFN table and the digits curve")
    args = ap.parse_args()
    os.environ.setdefault("EDGECOMPILE_CACHE", tempfile.mkdtemp(prefix="ec-lowrank-"))
    with tempfile.TemporaryDirectory() as tmp:
        digits_table(Path(tmp))  # first: training in a process whose TVM pool was set to 1 thread crawls
        ffn_table(args.runs)
        if not args.skip_models:
            model_table(Path(tmp), args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
