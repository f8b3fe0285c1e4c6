"""edgecompile vs ONNX Runtime on CPU, in one process: median latency at batch 1 with 1 thread and
with all threads, and the ratio edgecompile / ORT (below 1.0 means edgecompile is faster).

ORT runs the same ONNX file in fp32, after its `quantize_dynamic` (int8 weights, dynamic
activations), and after `quantize_static` (QDQ, calibrated on the same 16 samples edgecompile
calibrates on). Models: a MiniLM-L6-sized encoder (6 layers, hidden 384, 12 heads, FFN 1536,
seq 128), a ViT-Tiny-sized model (patch 16, 224x224, hidden 192, 12 layers) and, with --slow, a
BERT-base-sized encoder (12 layers, hidden 768, seq 128). Weights are random (seeded): latency does
not depend on their values.

Then a GEMM kernel table: GFLOP/s of our fp32 kernel on each model's linear-layer shapes, one
thread, next to the machine's fp32 peak for the instruction set, computed as
    peak = clock (max from cpufreq, else /proc/cpuinfo) x 2 FMA pipes x lanes x 2 flop/FMA.

    python benchmarks/cpu_vs_onnxruntime.py [--slow] [--runs 30] [--target native]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from edgecompile.runtime.model import time_calls  # noqa: E402


def models(slow: bool):
    import torch
    from models import BertStyleEncoder, TinyViT

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 30522, (1, 128), generator=g)
    mask = torch.ones(1, 128, dtype=torch.int64)
    out = [
        (
            "MiniLM-L6-sized",
            BertStyleEncoder(30522, 384, 6, 12, 1536, 512),
            (ids, mask),
            ["input_ids", "attention_mask"],
        ),
        (
            "ViT-Tiny-sized",
            TinyViT(224, 16, 3, 192, 12, 3, 768, 1000),
            (torch.randn(1, 3, 224, 224, generator=g),),
            ["pixel_values"],
        ),
    ]
    if slow:
        out.append(
            (
                "BERT-base-sized",
                BertStyleEncoder(30522, 768, 12, 12, 3072, 512),
                (ids, mask),
                ["input_ids", "attention_mask"],
            )
        )
    return out


def calib_samples(feeds: dict, n: int = 16) -> list[dict]:
    rng = np.random.default_rng(1)
    samples = []
    for _ in range(n):
        s = {}
        for k, v in feeds.items():
            s[k] = (
                rng.integers(0, 30522, v.shape).astype(v.dtype)
                if k == "input_ids"
                else (v.copy() if v.dtype.kind != "f" else rng.standard_normal(v.shape).astype(v.dtype))
            )
        samples.append(s)
    return samples


def time_ort(path: Path, feeds: dict, threads: int, runs: int) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return statistics.median(time_calls(lambda: sess.run(None, feeds), runs, warmup=5))


def ort_int8(path: Path, samples: list[dict], workdir: Path) -> tuple[Path, Path]:
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
        str(path),
        str(qdq),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    return dyn, qdq


def peak_gflops(target_isa) -> tuple[float, str]:
    mhz = None
    try:
        mhz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000
        src = "cpufreq max"
    except OSError:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                src = "/proc/cpuinfo"
                break
    lanes = target_isa.lanes(32)
    if target_isa.fma:  # two FMA pipes (Intel since Haswell, AMD since Zen 2, big ARM cores)
        return mhz / 1e3 * 2 * lanes * 2, f"{mhz:.0f} MHz ({src}) x 2 FMA pipes x {lanes} lanes x 2"
    return mhz / 1e3 * lanes * 2, f"{mhz:.0f} MHz ({src}) x (1 mul + 1 add pipe) x {lanes} lanes"


def gemm_table(shapes: dict[str, list[tuple[int, int, int]]], target: str, runs: int) -> None:
    import tvm
    from tvm import relax

    from edgecompile.lower.build import compile_module
    from edgecompile.lower.schedules.isa import vector_isa
    from edgecompile.runtime import set_threads
    from edgecompile.targets import get_profile

    profile = get_profile(target).resolved()
    isa = vector_isa(tvm.target.Target(profile.tvm))
    peak, how = peak_gflops(isa)
    print(f"\nfp32 GEMM kernel, 1 thread (peak {peak:.1f} GFLOP/s = {how})")
    print(f"{'model':<18} {'M x K x N':<18} {'ms':>8} {'GFLOP/s':>9} {'% peak':>7}")
    rng = np.random.default_rng(0)
    set_threads(1)
    for model, dims in shapes.items():
        for m, k, n in dims:
            bb = relax.BlockBuilder()
            x = relax.Var("x", relax.TensorType((m, k), "float32"))
            with bb.function("main", [x]):
                with bb.dataflow():
                    w = relax.const(rng.standard_normal((k, n)).astype("float32"))
                    y = bb.emit_output(relax.op.matmul(x, w))
                bb.emit_func_output(y)
            ex = compile_module(bb.get(), profile)
            vm = relax.VirtualMachine(ex, tvm.cpu())
            xt = tvm.runtime.tensor(rng.standard_normal((m, k)).astype("float32"))
            t = statistics.median(time_calls(lambda vm=vm, xt=xt: vm["main"](xt), runs, warmup=5)) / 1e3
            gf = 2 * m * k * n / t / 1e9
            print(f"{model:<18} {f'{m}x{k}x{n}':<18} {t * 1e3:8.3f} {gf:9.1f} {100 * gf / peak:6.0f}%")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slow", action="store_true", help="also the BERT-base-sized encoder")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--target", default="native")
    args = ap.parse_args()
    from models import export_onnx

    import edgecompile

    all_threads = len(os.sched_getaffinity(0))
    rows = []
    shapes = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, module, inputs, names in models(args.slow):
            path = tmp / f"{name}.onnx"
            outs = ["output_0"] if len(names) == 1 else ["last_hidden_state", "pooled"]
            export_onnx(module.eval(), inputs, path, names, outs, dynamo=False)
            feeds = {n: t.numpy() for n, t in zip(names, inputs)}
            t0 = time.perf_counter()
            art = edgecompile.compile(path, target=args.target, output=tmp / f"{name}-art")
            compile_s = time.perf_counter() - t0
            model = edgecompile.load(art)
            dyn, qdq = ort_int8(path, calib_samples(feeds), tmp)
            for threads in sorted({1, all_threads}):
                ec = model.benchmark(runs=args.runs, threads=threads, feeds=feeds).median_ms
                fp32 = time_ort(path, feeds, threads, args.runs)
                d = time_ort(dyn, feeds, threads, args.runs)
                q = time_ort(qdq, feeds, threads, args.runs)
                rows.append((name, threads, ec, fp32, d, q, compile_s))
            hidden = module.blocks[0].q.in_features if hasattr(module, "blocks") else 192
            ffn = module.blocks[0].up.out_features if hasattr(module, "blocks") else 768
            m = 128 if hasattr(module, "blocks") else 197
            shapes[name] = [(m, hidden, hidden), (m, hidden, ffn), (m, ffn, hidden)]

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
