"""CUDA: MiniLM-sized and BERT-base-sized encoders, batch 1, seq 128 -- our fp16 and integer-only
int8 builds against PyTorch eager fp16 and ONNX Runtime's CUDA provider, in one run on the GPU.

Two steps, because the GPU machine has neither network nor the compiler:

    # here (the compiler): export, compile for the GPU's architecture, bundle with our runtime
    python benchmarks/cuda_encoder.py build --target cuda-sm90 -o build/cuda-bench
    # on the GPU machine (python3 with numpy; torch/onnxruntime-gpu used when importable)
    python3 benchmarks/cuda_encoder.py run build/cuda-bench --runs 100

``build`` writes, per model, ``<model>.onnx`` (+ weights), ``inputs.npz`` and one bundle per recipe
(``edgecompile package --python``: the artifact, TVM's runtime with its CUDA sidecar, our runtime).
``run`` times each bundle with our runtime (median of --runs after warm-up, inputs on the GPU,
the device synchronised after each call) and, in the same process, PyTorch eager fp16 on the same
module (synchronised likewise) and ORT's CUDAExecutionProvider on the ONNX file (its timing
includes host<->device copies, as ORT's run() does them), then prints the
table and each build's latency over PyTorch fp16's (issue 9's goal: int8 integer-only <= 0.7x).
BERT-base-sized means BERT-base's shapes (hidden 768, 12 layers, 12 heads) with random weights:
latency does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import SEQ, median_ms, ort_session

RECIPES = ("fp16", "int8-integer-only")
MODELS = ("minilm", "bert-base")


def _torch_module(name: str):
    from minilm_spam import encoder

    if name == "minilm":
        return encoder.sentence_encoder()
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig()).eval()  # BERT-base shapes
    wrapped = encoder.sentence_encoder()
    wrapped.bert = bert
    return wrapped


def build(args) -> None:
    from minilm_spam import encoder

    import edgecompile
    from edgecompile.artifact.bundle import make_bundle

    out = Path(args.output)
    tok = encoder.tokenizer()
    texts = ["The quarterly report shows revenue growth in every region.", "Win a free cruise, click now!"]
    for name in args.models:
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        onnx_path = d / f"{name}.onnx"
        if not onnx_path.exists():  # (building the module costs seconds; skip it when exported)
            encoder.export(onnx_path, tok, module=_torch_module(name))
        inputs = encoder.tokenize(tok, texts[:1])
        np.savez(d / "inputs.npz", **inputs)
        calib = encoder.tokenize(tok, texts * 8)
        np.savez(d / "calib.npz", **{k: v[:, None] for k, v in calib.items()})
        shapes = {n: (1, SEQ) for n in encoder.INPUTS}
        for recipe in args.recipes:
            t0 = time.perf_counter()
            art = edgecompile.compile(
                onnx_path,
                target=args.target,
                recipe=recipe,
                calib=d / "calib.npz" if "int8" in recipe else None,
                output=d / f"artifact-{recipe}",
                input_shapes=shapes,
            )
            bundle = make_bundle(art, d / f"bundle-{recipe}", python=True)
            print(f"{name} {recipe}: compiled in {time.perf_counter() - t0:.0f} s, bundle {bundle.total / 1e6:.1f} MB")
    (out / "build.json").write_text(json.dumps({"target": args.target, "models": args.models, "recipes": args.recipes}))


def _time_bundle(bundle: Path, inputs: Path, runs: int) -> float:
    code = f"""
import sys, os, json, numpy as np
sys.path.insert(0, {str(bundle / "python")!r}); os.environ["TVM_USE_RUNTIME_LIB"] = "1"
from edgecompile.runtime import load
m = load({str(bundle / "model")!r}); d = np.load({str(inputs)!r})
print(json.dumps(m.benchmark(runs={runs}, warmup=10, feeds={{k: d[k] for k in d.files}}).median_ms))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{bundle}: {proc.stderr.strip().splitlines()[-1:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def _time_torch(name: str, inputs: dict, runs: int) -> float | None:
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        module = _torch_module(name).half().cuda()
    except Exception as e:  # noqa: BLE001 - the baseline is optional on the GPU machine
        print(f"PyTorch fp16 baseline unavailable: {e}")
        return None
    args = [torch.from_numpy(inputs[k]).cuda() for k in ("input_ids", "attention_mask", "token_type_ids")]

    def call():  # synchronised after each call; so each timed call starts on an idle device
        module(*args)
        torch.cuda.synchronize()

    with torch.inference_mode():
        torch.cuda.synchronize()
        return median_ms(call, runs, warmup=10)


def _time_ort(onnx_path: Path, inputs: dict, runs: int) -> float | None:
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return None
        sess = ort_session(onnx_path, threads=None, providers=["CUDAExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - optional
        print(f"ONNX Runtime CUDA baseline unavailable: {e}")
        return None
    return median_ms(lambda: sess.run(None, inputs), runs, warmup=10)


def run(args) -> None:
    root = Path(args.build_dir)
    meta = json.loads((root / "build.json").read_text())
    print(
        f"| model | {' | '.join(f'{r} ms' for r in meta['recipes'])} | PyTorch fp16 ms | ORT CUDA fp32 ms | "
        f"{' | '.join(f'{r} / PyTorch fp16' for r in meta['recipes'])} |"
    )
    print("|---" * (2 * len(meta["recipes"]) + 3) + "|")
    for name in meta["models"]:
        d = root / name
        inputs = dict(np.load(d / "inputs.npz"))
        ours = [_time_bundle(d / f"bundle-{r}", d / "inputs.npz", args.runs) for r in meta["recipes"]]
        torch_ms = _time_torch(name, inputs, args.runs)
        ort_ms = _time_ort(d / f"{name}.onnx", inputs, args.runs)

        def fmt(v):
            return "n/a" if v is None else f"{v:.3f}"

        ratios = [fmt(None if torch_ms is None else o / torch_ms) for o in ours]
        print(
            f"| {name} | {' | '.join(fmt(o) for o in ours)} | {fmt(torch_ms)} | {fmt(ort_ms)} | {' | '.join(ratios)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    b = sub.add_parser("build", help="export, compile and bundle (on the compiling machine)")
    b.add_argument("--target", default="cuda-sm90")
    b.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    b.add_argument("--recipes", nargs="+", default=list(RECIPES))
    b.add_argument("-o", "--output", default="build/cuda-bench")
    r = sub.add_parser("run", help="time the bundles and the baselines (on the GPU machine)")
    r.add_argument("build_dir")
    r.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    build(args) if args.step == "build" else run(args)


if __name__ == "__main__":
    main()
