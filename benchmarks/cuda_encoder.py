"""CUDA: the real all-MiniLM-L6-v2 at 16..256 tokens -- our ranged fp16, int8 and integer-only int8
artifacts against PyTorch eager (fp16 and fp32) and ONNX Runtime's CUDA provider, in one run on the GPU.

Two steps, because the GPU machine has neither network nor the compiler:

    # here (the compiler): export, compile for the GPU's architecture, bundle our runtime once
    python benchmarks/cuda_encoder.py build --target cuda-sm90 --with-graphs int8-integer-only -o build/cuda-bench
    # on the GPU machine (python3 with numpy; torch / onnxruntime-gpu used when importable)
    bash benchmarks/cuda_device.sh build/cuda-bench --runs 200 --profile 128

``build`` writes ``minilm.onnx``, per length L the input ``inputs-L.npz`` (real English text, L
tokens, no padding) and ONNX Runtime's CPU fp32 answer for it (``refs.npz``), one **ranged** artifact
per recipe (``artifact-RECIPE``: ``1x1..256``, buckets 16..256 sharing one weights file; at a bucket
size a ranged run *is* the static build of that size; ``--with-graphs RECIPE`` adds the recipe with
CUDA graphs at 128 and 256 tokens) and ``runtime/``, one device bundle
(``edgecompile package --python``: TVM's runtime with its CUDA sidecar and our Python runtime) that
loads them all. Its ``tvm_ffi`` extension is the compiling Python's; ``cuda_device.sh`` takes the
GPU machine's python3's from an apache-tvm-ffi wheel in ``.whl/`` where they differ (the H200 run:
Python 3.12; ``pip download --only-binary=:all: --python-version 3.12 ... apache-tvm-ffi``), puts
``libcudart.so.13``'s folder on ``LD_LIBRARY_PATH`` and runs ``run`` with the bundled runtime.

The word-embedding table is cut to the token ids the inputs use (ids remapped; the outputs for these
inputs are the full model's, value for value): a GPU machine is reached through a 64 MiB copy, and
the full table alone is 47 MB in fp32. Latency does not change (the embedding is a gather of L rows).

``run`` prints, per length: each artifact's median latency (inputs on the GPU, the device
synchronised after each call) and the cosine of its sentence embedding to ONNX Runtime's fp32 one;
PyTorch eager fp16 and fp32 on the same module shape (random weights of MiniLM's configuration when
the real weights' package is not installed there: latency does not depend on the values), synchronised
likewise; ORT's CUDAExecutionProvider when the installed onnxruntime has it (its time includes the
host<->device copies, as ORT's run() does them). Then each artifact's latency over PyTorch fp16's
(issue 9's goal: integer-only int8 <= 0.7x at 128 tokens).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import traceback
from pathlib import Path

import numpy as np
from _common import artifact_mb, cosine, median_ms, ort_session

RECIPES = ("fp16", "int8", "int8-integer-only")
LENGTHS = (16, 32, 64, 100, 128, 200, 256)  # 100 then 128 (200, 256): one build, new inputs each call
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# MiniLM-L6's shape (all-MiniLM-L6-v2's config.json)
MINILM = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536}
TEXT = (
    "The committee met on Tuesday to review the quarterly figures, which showed that revenue had grown in every "
    "region except the north, where a late harvest and a strike at the port had delayed shipments for most of "
    "the spring. Several members asked whether the new warehouse, opened in March at a cost well above the "
    "original estimate, would pay for itself before the end of the decade; the finance director answered that "
    "it depended on fuel prices, on the exchange rate and on whether the two largest customers renewed their "
    "contracts in the autumn. A long discussion followed about staffing. The night shift had lost a third of "
    "its people since January, mostly to a competitor that opened a site twenty kilometres away and paid more "
    "for weekend work. The chair proposed a review of pay and rotas, to be presented at the next meeting, and "
    "asked the operations team to collect exit interviews, overtime records and the cost of agency staff. "
    "Finally, the board approved a modest donation to the local school, whose roof had been damaged in the "
    "storm last winter, and agreed to sponsor the town's summer football tournament for another three years, "
    "on condition that the club publish its accounts and that the company's name appear on the new shirts. "
    "Before closing, the secretary read a letter from a resident who complained about lorries using the narrow "
    "road past the primary school early in the morning; the operations manager promised to change the delivery "
    "schedule so that no vehicle would pass the school between eight and nine, and to put up new signs at the "
    "depot gate. The next meeting will be held in the library on the first Thursday of the month."
)


def _cut_vocabulary(module, ids: np.ndarray):
    """``module`` with its word-embedding table cut to ``ids`` (sorted, unique); returns the remap
    table (old id -> new id)."""
    import torch

    emb = module.bert.embeddings.word_embeddings
    module.bert.embeddings.word_embeddings = torch.nn.Embedding.from_pretrained(emb.weight[torch.from_numpy(ids)])
    remap = np.zeros(int(ids.max()) + 1, np.int64)
    remap[ids] = np.arange(len(ids))
    return remap


def _inputs(tok, length: int) -> dict[str, np.ndarray]:
    """``TEXT``'s first ``length`` tokens ([CLS] ... [SEP]), no padding."""
    enc = tok([TEXT], max_length=length, truncation=True, return_tensors="np")
    feeds = {k: enc[k].astype(np.int64) for k in INPUTS}
    assert feeds["input_ids"].shape == (1, length), f"TEXT is shorter than {length} tokens"
    return feeds


def build(args) -> None:
    import onnxruntime as ort
    from minilm_spam import encoder

    import edgecompile
    from edgecompile.artifact.bundle import make_bundle

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    tok = encoder.tokenizer()
    feeds = {n: _inputs(tok, n) for n in args.lengths}
    calib_texts = [TEXT[i * 131 :] for i in range(8)]  # 8 samples, 256 tokens and down to ~190
    calib = encoder.tokenize(tok, calib_texts, seq=max(args.lengths))
    ids = np.unique(np.concatenate([f["input_ids"].ravel() for f in feeds.values()] + [calib["input_ids"].ravel()]))
    module = encoder.sentence_encoder()
    remap = _cut_vocabulary(module, ids)
    for f in (*feeds.values(), calib):
        f["input_ids"] = remap[f["input_ids"]]
    onnx_path = encoder.export(out / "minilm.onnx", module=module, feeds=feeds[min(feeds)])
    np.savez(out / "calib.npz", **{k: v[:, None] for k, v in calib.items()})
    sess = ort_session(onnx_path, threads=None)
    refs = {}
    for n, f in feeds.items():
        np.savez(out / f"inputs-{n}.npz", **f)
        refs[f"L{n}"] = sess.run(None, f)[0]
    np.savez(out / "refs.npz", **refs)
    print(f"ONNX Runtime {ort.__version__} CPU fp32 references for {list(args.lengths)} tokens")
    shapes = {n: f"1x1..{max(args.lengths)}" for n in INPUTS}
    for recipe in args.recipes:
        t0 = time.perf_counter()
        if (out / f"artifact-{recipe}" / "manifest.json").exists():
            continue  # built by an earlier run
        art = edgecompile.compile(
            onnx_path,
            target=args.target,
            recipe=recipe,
            calib=out / "calib.npz" if "int8" in recipe else None,
            output=out / f"artifact-{recipe}",
            input_shapes=shapes,
        )
        print(f"{recipe}: compiled in {time.perf_counter() - t0:.0f} s, artifact {artifact_mb(art):.1f} MB")
    for recipe in args.with_graphs:  # the same recipe launched as CUDA graphs (opt-in), 128 and 256 only
        profile = out / "graphs.toml"
        shipped = Path(edgecompile.__file__).parent / "targets" / "profiles" / f"{args.target}.toml"
        profile.write_text("cuda_graphs = true\n" + shipped.read_text())
        dest = out / f"artifact-{recipe}-graphs"
        if not (dest / "manifest.json").exists():
            calib = out / "calib.npz" if "int8" in recipe else None
            edgecompile.compile(onnx_path, target=str(profile), recipe=recipe, output=dest, input_shapes=shapes,
                                calib=calib, buckets={"seq": [128, 256]})  # fmt: skip
    args.recipes = [*args.recipes, *(f"{r}-graphs" for r in args.with_graphs)]
    if "int8-integer-only" in args.recipes:
        cpu_refs(out, args.lengths)
    runtime = make_bundle(out / f"artifact-{args.recipes[0]}", out / "runtime", python=True)
    shutil.rmtree(runtime.root / "model")  # the runtime is what run() takes from it; the artifacts are beside it
    size = sum(p.stat().st_size for p in runtime.root.rglob("*") if p.is_file())
    print(f"runtime (TVM's runtime with its CUDA sidecar, our Python runtime): {size / 1e6:.1f} MB")
    (out / "build.json").write_text(
        json.dumps({"target": args.target, "recipes": args.recipes, "lengths": args.lengths, "vocab": len(ids)})
    )


def cpu_refs(out: Path, lengths) -> None:
    """``refs_cpu.npz``: the integer-only recipe's answers at each length from a ranged artifact for
    this machine's CPU, same ONNX and calibration: integer arithmetic gives the GPU's bit for bit."""
    import edgecompile

    shapes = {n: f"1x1..{max(lengths)}" for n in INPUTS}
    art = edgecompile.compile(
        out / "minilm.onnx",
        target="native",
        recipe="int8-integer-only",
        calib=out / "calib.npz",
        output=out / "cpu-int8-integer-only",
        input_shapes=shapes,
    )
    model = edgecompile.load(art)
    refs = {f"L{n}": next(iter(model.run(dict(np.load(out / f"inputs-{n}.npz"))).values())) for n in lengths}
    np.savez(out / "refs_cpu.npz", **refs)
    shutil.rmtree(art)


def _torch_timer(vocab: int):
    """``time(feeds, dtype, runs) -> ms`` of PyTorch eager on MiniLM's shape, or None without CUDA."""
    try:
        import torch
        from transformers import BertConfig, BertModel

        if not torch.cuda.is_available():
            return None
        torch.manual_seed(0)
        bert = BertModel(BertConfig(vocab_size=vocab, **MINILM), add_pooling_layer=False).eval().cuda()
    except Exception as e:  # noqa: BLE001 - the baseline is optional on the GPU machine
        print(f"PyTorch baseline unavailable: {e}")
        return None

    def time_it(feeds: dict, dtype: str, runs: int) -> float:
        model = bert.to(getattr(torch, dtype))
        args = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}

        def call():  # BERT, mean pooling, normalisation; synchronised so each call starts idle
            h = model(**args).last_hidden_state
            w = args["attention_mask"].unsqueeze(-1).to(h.dtype)
            torch.nn.functional.normalize((h * w).sum(1) / w.sum(1), dim=-1)
            torch.cuda.synchronize()

        with torch.inference_mode():
            return median_ms(call, runs, warmup=10)

    return time_it


def _ort_cuda(onnx_path: Path):
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            print(f"ONNX Runtime {ort.__version__} here has no CUDAExecutionProvider: no ORT CUDA column")
            return None
        return ort.InferenceSession(str(onnx_path), providers=["CUDAExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - optional
        print(f"ONNX Runtime CUDA baseline unavailable: {e}")
        return None


def _ours(model, feeds: dict, ref: np.ndarray, runs: int, exact: np.ndarray | None) -> tuple:
    """``(median ms, cosine to ref)`` of one artifact at one length (and whether it equals ``exact``
    bit for bit, printed); ``(None, None)`` if it fails."""
    try:
        out = next(iter(model.run(feeds).values()))
        if exact is not None:
            same, diff = bool(np.array_equal(out, exact)), float(np.abs(out - exact).max())
            print(f"  {feeds['input_ids'].shape[1]} tokens: integer-only GPU == CPU bit for bit: {same} ({diff:.3g})")
        return model.benchmark(runs=runs, warmup=10, feeds=feeds).median_ms, cosine(out, ref)
    except Exception:  # noqa: BLE001 - the table goes on; the error is printed
        traceback.print_exc()
        return None, None


def run(args) -> None:
    from edgecompile.runtime import load

    root = Path(args.build_dir)
    meta = json.loads((root / "build.json").read_text())
    lengths = meta["lengths"]
    refs = np.load(root / "refs.npz")
    cpu = np.load(root / "refs_cpu.npz") if (root / "refs_cpu.npz").exists() else {}
    models = {}
    for r in meta["recipes"]:
        try:
            models[r] = load(root / f"artifact-{r}")
            print(f"{r}: loaded in {models[r].load_ms:.0f} ms")
        except Exception:  # noqa: BLE001 - the others still run
            traceback.print_exc()
    recipes = list(models)
    torch_ms = _torch_timer(meta["vocab"])
    ort_sess = _ort_cuda(root / "minilm.onnx")
    head = [f"{r} ms" for r in recipes] + ["PyTorch fp16 ms", "PyTorch fp32 ms", "ORT CUDA ms"]
    head += [f"cos {r}" for r in recipes] + [f"{r} / PyTorch fp16" for r in recipes]
    print("| tokens | " + " | ".join(head) + " |\n" + "|---" * (len(head) + 1) + "|")
    for n in lengths:
        feeds = dict(np.load(root / f"inputs-{n}.npz"))
        exact = {r: cpu[f"L{n}"] for r in recipes if r.startswith("int8-integer-only") and f"L{n}" in cpu}
        timed = [_ours(models[r], feeds, refs[f"L{n}"], args.runs, exact.get(r)) for r in recipes]
        ours, cos = zip(*timed) if timed else ((), ())
        pt = [None if torch_ms is None else torch_ms(feeds, dt, args.runs) for dt in ("float16", "float32")]
        ort_ms = None if ort_sess is None else median_ms(lambda f=feeds: ort_sess.run(None, f), args.runs, warmup=10)
        fmt = lambda v, p=3: "n/a" if v is None else f"{v:.{p}f}"  # noqa: E731
        cells = [fmt(v) for v in (*ours, *pt, ort_ms)] + [fmt(c, 5) for c in cos]
        cells += [fmt(None if pt[0] is None or o is None else o / pt[0], 2) for o in ours]
        print(f"| {n} | " + " | ".join(cells) + " |", flush=True)
    for r in recipes if args.profile else ():
        _print_profile(r, models[r], dict(np.load(root / f"inputs-{args.profile}.npz")))


def _print_profile(recipe: str, model, feeds: dict, top: int = 12) -> None:
    """The ``top`` kernels by time at one length (edgecompile's per-kernel profiler, synchronised)."""
    try:
        prof = model.profile(repeats=20, feeds=feeds)
    except Exception:  # noqa: BLE001 - optional
        traceback.print_exc()
        return
    print(f"\n{recipe}, {feeds['input_ids'].shape[1]} tokens: run {prof.run_ms:.3f} ms, outside kernels "
          f"{prof.outside_ms:.3f} ms")  # fmt: skip
    for k in prof.kernels[:top]:
        print(f"  {k.total_ms:8.4f} ms {k.share:6.1%} {k.calls:3d} x {k.mean_us:8.1f} us  {k.name} ({k.rule})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    b = sub.add_parser("build", help="export, compile and bundle (on the compiling machine)")
    b.add_argument("--target", default="cuda-sm90")
    b.add_argument("--recipes", nargs="+", default=list(RECIPES))
    b.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS))
    b.add_argument("--with-graphs", nargs="*", default=[], help="recipes also built with CUDA graphs (128, 256)")
    b.add_argument("-o", "--output", default="build/cuda-bench")
    c = sub.add_parser("cpu-refs", help="the integer-only CPU answers (build does this)")
    c.add_argument("build_dir")
    r = sub.add_parser("run", help="time the artifacts and the baselines (on the GPU machine)")
    r.add_argument("build_dir")
    r.add_argument("--runs", type=int, default=100)
    r.add_argument("--profile", type=int, default=0, help="print the top kernels of each artifact at this length")
    args = parser.parse_args()
    if args.step == "cpu-refs":
        meta = json.loads((Path(args.build_dir) / "build.json").read_text())
        cpu_refs(Path(args.build_dir), meta["lengths"])
    else:
        build(args) if args.step == "build" else run(args)


if __name__ == "__main__":
    main()
