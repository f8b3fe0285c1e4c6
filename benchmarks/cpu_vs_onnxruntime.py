"""edgecompile vs ONNX Runtime on CPU, in one process: median latency at batch 1 with 1 thread and
with all threads, and the ratio edgecompile / ORT (below 1.0 means edgecompile is faster).

ORT runs the same ONNX file in fp32, after its `quantize_dynamic` (int8 weights, dynamic
activations), and after `quantize_static` (QDQ, calibrated on the same 16 samples edgecompile
calibrates on). Models: a MiniLM-L6-sized encoder (6 layers, hidden 384, 12 heads, FFN 1536,
seq 128), a ViT-Tiny-sized model (patch 16, 224x224, hidden 192, 12 layers) and, with --slow, a
BERT-base-sized encoder (12 layers, hidden 768, seq 128). Weights are random (seeded): latency does
not depend on their values.

Then a GEMM kernel table: GFLOP/s of our fp32 kernel and GOP/s of our int8 x int8 -> int32
kernel on each model's linear-layer shapes, one thread, next to the core's peak for the
instruction each uses, and the time of the int8 GEMM with a bias and a requantize to int8 fused
after it over the bare one, for each recipe's requantize (float32 in int8, dyadic in integer-only).
The peak is measured, not taken from a datasheet: benchmarks/peak_probe.c
(built with the system cc) times ten independent chains of the instruction, so
    fp32 peak = FMA instructions/ns x lanes x 2 flop,
    int8 peak = vpmaddwd/ns x 16 MACs x 2 op (AVX2), or vpdpbusd/ns x 64 MACs x 2 op (AVX-512 VNNI).
(Without the probe, the fp32 peak falls back to /proc/cpuinfo's clock x 2 FMA pipes.) The int8
time includes the kernel's pass converting A to the instruction's operand type.

    python benchmarks/cpu_vs_onnxruntime.py [--slow] [--runs 30] [--target native]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
from _common import (
    BERT_BASE,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    MINILM_L6,
    VIT_TINY,
    VOCAB,
    bert_style,
    export,
    host_profile,
    host_vm,
    ort_int8,
    ort_ms,
    thread_counts,
    time_ms,
    timed_compile,
    token_inputs,
)


def models(slow: bool):
    import torch
    from models import TinyViT

    g = torch.Generator().manual_seed(0)
    ids, mask = token_inputs(g)
    out = [
        ("MiniLM-L6-sized", bert_style(MINILM_L6), (ids, mask), ENCODER_INPUTS),
        ("ViT-Tiny-sized", TinyViT(*VIT_TINY), (torch.randn(1, 3, 224, 224, generator=g),), ["pixel_values"]),
    ]
    if slow:
        out.append(("BERT-base-sized", bert_style(BERT_BASE), (ids, mask), ENCODER_INPUTS))
    return out


def calib_samples(feeds: dict, n: int = 16) -> list[dict]:
    rng = np.random.default_rng(1)
    samples = []
    for _ in range(n):
        s = {}
        for k, v in feeds.items():
            s[k] = (
                rng.integers(0, VOCAB, v.shape).astype(v.dtype)
                if k == "input_ids"
                else (v.copy() if v.dtype.kind != "f" else rng.standard_normal(v.shape).astype(v.dtype))
            )
        samples.append(s)
    return samples


def _linear_shapes(m: int, hidden: int, ffn: int) -> list[tuple[int, int, int]]:
    return [(m, hidden, hidden), (m, hidden, ffn), (m, ffn, hidden)]


GEMM_SHAPES = {  # (M, K, N) of each model's linear layers: QKV/output projection, FFN up, FFN down
    "MiniLM-L6-sized": _linear_shapes(128, 384, 1536),
    "ViT-Tiny-sized": _linear_shapes(197, 192, 768),
    "BERT-base-sized": _linear_shapes(128, 768, 3072),
}


def probe_rates() -> dict[str, float]:
    """Instructions per ns of each multiply-add our GEMMs use, one core (benchmarks/peak_probe.c)."""
    import shutil
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or os.uname().machine != "x86_64":
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "peak_probe"
        subprocess.run([cc, "-O2", str(Path(__file__).with_name("peak_probe.c")), "-o", str(exe)], check=True)
        out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {name: float(rate) for name, rate in (line.split() for line in out.splitlines())}


def peaks(isa, rates: dict[str, float]) -> tuple[float, str, float | None, str]:
    """(fp32 GFLOP/s, how, int8 GOP/s or None, how) on one core for ``isa``'s instructions."""
    zmm = isa.bits == 512
    fma = rates.get("vfmadd231ps.zmm" if zmm else "vfmadd231ps.ymm")
    lanes = isa.lanes(32)
    if fma:
        fp32, how = fma * lanes * 2, f"measured {fma:.2f} FMA/ns x {lanes} lanes x 2 flop"
    else:
        mhz = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
        fp32, how = mhz / 1e3 * 2 * lanes * 2, f"{mhz:.0f} MHz x 2 FMA pipes x {lanes} lanes x 2 (nominal)"
    if isa.int8_dot == "vnni" and "vpdpbusd.zmm" in rates:
        r = rates["vpdpbusd.zmm"]
        return fp32, how, r * 64 * 2, f"measured {r:.2f} vpdpbusd/ns x 64 MAC x 2 op"
    if isa.int8_dot == "pmaddwd" and not zmm and "vpmaddwd.ymm" in rates:
        r = rates["vpmaddwd.ymm"]
        return fp32, how, r * 16 * 2, f"measured {r:.2f} vpmaddwd/ns x 16 MAC x 2 op"
    return fp32, how, None, "not measured for this instruction set"


def _gemm_kernel(m: int, k: int, n: int, dtype: str, rng, requant: str | None = None):
    """``x @ W``; with ``requant`` (``float``: the int8 recipe's, ``dyadic``: integer-only's) an
    int32 bias and the requantize to int8 that edgecompile.quant.rewriter emits, fused after it."""
    from tvm import relax

    from edgecompile.quant.rewriter import requantize

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((m, k), dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            if dtype == "int8":
                w = relax.const(rng.integers(-127, 128, (k, n)).astype("int8"))
                y = relax.op.matmul(x, w, out_dtype="int32")
                if requant:
                    y = relax.op.add(y, relax.const(rng.integers(-1000, 1000, n).astype(np.int32)))
                    y = requantize(y, rng.uniform(0.5, 2.0, n) / (64 * np.sqrt(k)), dyadic=requant == "dyadic")
                y = bb.emit_output(y)
            else:
                w = relax.const(rng.standard_normal((k, n)).astype("float32"))
                y = bb.emit_output(relax.op.matmul(x, w))
        bb.emit_func_output(y)
    return bb.get()


def gemm_table(shapes: dict[str, list[tuple[int, int, int]]], target: str, runs: int) -> None:
    import tvm

    from edgecompile.lower.schedules.isa import vector_isa
    from edgecompile.runtime import set_threads

    profile = host_profile(target)
    isa = vector_isa(tvm.target.Target(profile.tvm))
    fp32_peak, fp32_how, int8_peak, int8_how = peaks(isa, probe_rates())
    print(f"\nGEMM kernels, 1 thread ({isa.bits}-bit vectors, int8 via {isa.int8_dot or 'int32 multiply'})")
    print(f"  fp32 peak {fp32_peak:.1f} GFLOP/s = {fp32_how}")
    print(f"  int8 peak {f'{int8_peak:.1f} GOP/s = ' if int8_peak else ''}{int8_how}")
    if isa.int8_dot != "vnni":
        print("  VNNI peak: this CPU has no AVX-512 VNNI; vpdpbusd does 4x the MACs of an FMA per instruction")
    print(
        f"{'model':<18} {'M x K x N':<16} {'fp32 ms':>8} {'GFLOP/s':>8} {'%peak':>6}"
        f" {'int8 ms':>8} {'GOP/s':>7} {'%peak':>6} {'int8/fp32':>9} {'+rq f32':>8} {'+rq dyadic':>10}"
    )
    rng = np.random.default_rng(0)
    set_threads(1)
    kinds = {"float32": ("float32", None), "int8": ("int8", None)}
    kinds |= {"float": ("int8", "float"), "dyadic": ("int8", "dyadic")}
    for model, dims in shapes.items():
        for m, k, n in dims:
            calls = {}
            for kind, (dtype, requant) in kinds.items():
                vm = host_vm(_gemm_kernel(m, k, n, dtype, rng, requant), profile)
                if dtype == "int8":
                    xt = tvm.runtime.tensor(rng.integers(-128, 128, (m, k)).astype("int8"))
                else:
                    xt = tvm.runtime.tensor(rng.standard_normal((m, k)).astype("float32"))
                calls[kind] = lambda vm=vm, xt=xt: vm["main"](xt)
            # Alternate the kernels over 3 rounds so clock and neighbour noise hits them alike.
            samples = {kind: [] for kind in calls}
            for _ in range(3):
                for kind, call in calls.items():
                    samples[kind] += time_ms(call, max(1, runs // 3), warmup=5)
            t = {kind: statistics.median(ts) / 1e3 for kind, ts in samples.items()}
            gf, gi = (2 * m * k * n / t[kind] / 1e9 for kind in ("float32", "int8"))
            ipk = f"{100 * gi / int8_peak:5.0f}%" if int8_peak else f"{'-':>6}"
            print(
                f"{model:<18} {f'{m}x{k}x{n}':<16} {t['float32'] * 1e3:8.3f} {gf:8.1f} {100 * gf / fp32_peak:5.0f}%"
                f" {t['int8'] * 1e3:8.3f} {gi:7.1f} {ipk} {gi / gf:8.2f}x"
                f" {t['float'] / t['int8']:7.2f}x {t['dyadic'] / t['int8']:9.2f}x"
            )
    print("  +rq: the int8 GEMM with a bias and requantize to int8 fused after it, over the bare int8 GEMM")
    print("       (f32: the int8 recipe's float32 multiply; dyadic: integer-only's int64 multiply and shift)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slow", action="store_true", help="also the BERT-base-sized encoder")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--target", default="native")
    ap.add_argument("--kernels-only", action="store_true", help="only the GEMM kernel table")
    args = ap.parse_args()
    if args.kernels_only:
        gemm_table(
            GEMM_SHAPES if args.slow else {k: v for k, v in GEMM_SHAPES.items() if "BERT" not in k},
            args.target,
            args.runs,
        )
        return 0
    import edgecompile

    rows = []
    shapes = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, module, inputs, names in models(args.slow):
            path = tmp / f"{name}.onnx"
            export(module, inputs, path, names, ["output_0"] if len(names) == 1 else ENCODER_OUTPUTS)
            feeds = {n: t.numpy() for n, t in zip(names, inputs)}
            art, compile_s = timed_compile(path, target=args.target, output=tmp / f"{name}-art")
            model = edgecompile.load(art)
            dyn, qdq = ort_int8(path, calib_samples(feeds), tmp)
            for threads in thread_counts():
                ec = model.benchmark(runs=args.runs, threads=threads, feeds=feeds).median_ms
                fp32 = ort_ms(path, feeds, threads, args.runs)
                d = ort_ms(dyn, feeds, threads, args.runs)
                q = ort_ms(qdq, feeds, threads, args.runs)
                rows.append((name, threads, ec, fp32, d, q, compile_s))
            shapes[name] = GEMM_SHAPES[name]

    print(f"\nbatch 1, median of {args.runs} runs (ms); ratio = edgecompile / ORT (< 1: edgecompile faster)")
    head = (
        f"{'model':<17} {'thr':>3} {'edgecompile':>11} {'ORT fp32':>9} {'ORT dyn-int8':>12} {'ORT qdq-int8':>12}"
        f" {'vs fp32':>8} {'vs dyn':>7} {'vs qdq':>7} {'compile s':>9}"
    )
    print(head)
    for name, th, ec, fp32, d, q, cs in rows:
        print(
            f"{name:<17} {th:>3} {ec:>11.2f} {fp32:>9.2f} {d:>12.2f} {q:>12.2f} {ec / fp32:>8.2f} {ec / d:>7.2f}"
            f" {ec / q:>7.2f} {cs:>9.1f}"
        )
    gemm_table(shapes, args.target, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
