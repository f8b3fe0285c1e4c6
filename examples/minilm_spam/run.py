"""The MiniLM spam classifier end to end: export the real all-MiniLM-L6-v2 encoder, compile it for
this machine with each recipe, and evaluate every build against ONNX Runtime on real emails.

    python examples/minilm_spam/run.py [--size small|full] [--recipes fp32,int8,int8-integer-only]
                                       [--runs 20] [--workdir build/minilm_spam]

Steps: the SpamAssassin split (data.py), the encoder exported to ONNX (encoder.py), a logistic
regression head (scikit-learn, ``C=10``) trained on the fp32 embeddings of the train split, then for
every engine (edgecompile with each recipe, ONNX Runtime fp32 and ORT ``quantize_dynamic`` int8)
the test split embedded and classified by that same head ("same classifier, different numerics").
Printed per engine: test accuracy and its change against fp32, mean / min embedding cosine against
fp32 (ORT fp32 is the reference), agreement of the predictions with fp32, and latency at batch 1,
seq 128, 1 thread (median of ``--runs``), with ratios to ORT fp32 and ORT int8. Then the test split
once more, each email at its own token length through one ranged artifact (``1..128`` tokens)
instead of padded to 128: how much faster the whole split ran (``--no-own-lengths`` skips it).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data  # noqa: E402
import encoder  # noqa: E402

DEFAULT_RECIPES = ("fp32", "int8", "int8-integer-only")


@dataclass
class Row:
    """One engine's figures on the test split."""

    engine: str
    accuracy: float
    cosine_mean: float
    cosine_min: float
    agreement: float
    latency_ms: float | None = None
    compile_s: float | None = None
    extra: dict = field(default_factory=dict)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _embed(run_one, feeds: dict[str, np.ndarray], label: str) -> np.ndarray:
    """Embed every row of ``feeds`` with ``run_one({name: [1, seq]}) -> [1, 384]``, with progress."""
    from rich.progress import track

    n = len(next(iter(feeds.values())))
    rows = [run_one({k: v[i : i + 1] for k, v in feeds.items()}) for i in track(range(n), label, transient=True)]
    return np.concatenate(rows).astype(np.float32)


def _ort(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort_latency(path: Path, feeds: dict, runs: int) -> float:
    from edgecompile.runtime.model import time_calls

    sess = _ort(path, threads=1)
    return statistics.median(time_calls(lambda: sess.run(None, feeds), runs, warmup=5))


def _ort_dynamic_int8(path: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not out.exists():
        quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
    return out


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def evaluate(
    size: str = "small",
    recipes: tuple[str, ...] = DEFAULT_RECIPES,
    workdir: Path = Path("build/minilm_spam"),
    runs: int = 20,
    peers: bool = True,
    say=_say,
) -> list[Row]:
    """Rows for ORT fp32 (the reference), each edgecompile recipe and (``peers``) ORT dynamic int8.

    ``runs=0`` skips the latency measurements."""
    from sklearn.linear_model import LogisticRegression

    import edgecompile
    from edgecompile.runtime import set_threads

    workdir = Path(workdir)
    say(f"data: SpamAssassin ({size})")
    split = data.splits(size)
    tok = encoder.tokenizer()
    feeds = {k: encoder.tokenize(tok, split[k][0]) for k in ("train", "test", "calib")}
    say(f"  {len(split['train'][1])} train, {len(split['test'][1])} test, {len(split['calib'][1])} calibration emails")
    say("export: all-MiniLM-L6-v2 to ONNX")
    onnx_path = encoder.export(workdir / "minilm.onnx", tok)

    ref = _ort(onnx_path, threads=0)
    ort_run = lambda f: ref.run(None, f)[0]  # noqa: E731
    say("fp32 reference (ONNX Runtime): embed the train split, fit the head")
    n_train = len(split["train"][1])
    train_emb = np.concatenate(
        [ref.run(None, {k: v[i : i + 32] for k, v in feeds["train"].items()})[0] for i in range(0, n_train, 32)]
    )
    head = LogisticRegression(C=10, max_iter=2000).fit(train_emb, split["train"][1])
    y_test = split["test"][1]
    fp32_emb = _embed(ort_run, feeds["test"], "ORT fp32: test split")
    fp32_pred = head.predict(fp32_emb)

    def row(name: str, emb: np.ndarray, **kw) -> Row:
        pred = head.predict(emb)
        cos = _cosines(emb, fp32_emb)
        return Row(name, float((pred == y_test).mean() * 100), float(cos.mean()), float(cos.min()),
                   float((pred == fp32_pred).mean() * 100), **kw)  # fmt: skip

    one = {k: v[:1] for k, v in feeds["test"].items()}
    rows = [row("ORT fp32", fp32_emb, latency_ms=_ort_latency(onnx_path, one, runs) if runs else None)]
    calib = [{k: v[i : i + 1] for k, v in feeds["calib"].items()} for i in range(len(split["calib"][1]))]
    shapes = {k: (1, encoder.SEQ) for k in encoder.INPUTS}
    for rec in recipes:
        say(f"compile: --recipe {rec}")
        t0 = time.perf_counter()
        art = edgecompile.compile(
            onnx_path, output=workdir / f"ec-{rec.replace(':', '_')}", input_shapes=shapes, recipe=rec,
            calib=None if rec == "fp32" else calib, progress=lambda m: say(f"  {m}"),
            calib_progress=lambda stage, done, total: say(f"  {stage}: {total} samples") if done == total else None,
        )  # fmt: skip
        compile_s = time.perf_counter() - t0
        model = edgecompile.load(art)
        set_threads(len(os.sched_getaffinity(0)))  # a previous benchmark left 1
        emb = _embed(lambda f, m=model: m.run(f)[encoder.OUTPUT], feeds["test"], f"edgecompile {rec}: test split")
        lat = model.benchmark(runs=runs, threads=1, feeds=one).median_ms if runs else None
        rows.append(row(f"edgecompile {rec}", emb, latency_ms=lat, compile_s=compile_s))
    if peers:
        say("ONNX Runtime quantize_dynamic (int8)")
        dyn = _ort_dynamic_int8(onnx_path, workdir / "minilm.dyn_int8.onnx")
        sess = _ort(dyn, threads=0)
        emb = _embed(lambda f: sess.run(None, f)[0], feeds["test"], "ORT dynamic int8: test split")
        rows.append(row("ORT dynamic int8", emb, latency_ms=_ort_latency(dyn, one, runs) if runs else None))
    return rows


def own_lengths(size: str = "small", workdir: Path = Path("build/minilm_spam"), say=_say) -> dict:
    """The test split fed at each email's own token length through one ranged fp32 artifact
    (``1..SEQ`` tokens) against every email padded to ``SEQ`` through the static one, 1 thread:
    wall time of the whole split, mean tokens, and the embeddings' agreement."""
    import edgecompile
    from edgecompile.runtime import set_threads

    workdir = Path(workdir)
    split = data.splits(size)
    tok = encoder.tokenizer()
    texts = split["test"][0]
    onnx_path = encoder.export(workdir / "minilm.onnx", tok)
    padded = encoder.tokenize(tok, texts)
    own = [tok([t], truncation=True, max_length=encoder.SEQ, return_tensors="np") for t in texts]
    own = [{k: e[k].astype(np.int64) for k in encoder.INPUTS} for e in own]
    say(f"compile: one ranged fp32 artifact for 1..{encoder.SEQ} tokens, and the static {encoder.SEQ}-token one")
    ranged = edgecompile.load(edgecompile.compile(
        onnx_path, output=workdir / "ec-ranged-fp32", input_shapes={k: f"1x1..{encoder.SEQ}" for k in encoder.INPUTS},
    ))  # fmt: skip
    static = edgecompile.load(edgecompile.compile(
        onnx_path, output=workdir / "ec-static-fp32", input_shapes={k: (1, encoder.SEQ) for k in encoder.INPUTS},
    ))  # fmt: skip
    set_threads(1)
    t0 = time.perf_counter()
    rows = [{k: v[i : i + 1] for k, v in padded.items()} for i in range(len(texts))]
    a = np.concatenate([static.run(f)[encoder.OUTPUT] for f in rows])
    t_padded = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = np.concatenate([ranged.run(f)[encoder.OUTPUT] for f in own])
    t_own = time.perf_counter() - t0
    set_threads(len(os.sched_getaffinity(0)))
    return {"emails": len(texts), "mean_tokens": float(np.mean([f["input_ids"].shape[1] for f in own])),
            "padded_s": t_padded, "own_s": t_own, "cosine_min": float(_cosines(a, b).min())}  # fmt: skip


def table(rows: list[Row], n_test: int) -> str:
    """The Markdown table the script prints."""
    base = rows[0]
    lat = {r.engine: r.latency_ms for r in rows}
    lines = [
        f"MiniLM spam classifier, SpamAssassin test split ({n_test} emails), head trained on fp32 embeddings",
        "",
        "| engine | accuracy % | vs fp32 | cosine mean | cosine min | agreement % | 1-thread ms | /ORT fp32 "
        "| /ORT int8 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms = r.latency_ms

        def ratio(ref: str, ms=ms) -> str:
            return f"{ms / lat[ref]:.2f}" if ms and lat.get(ref) else "-"

        lines.append(
            f"| {r.engine} | {r.accuracy:.2f} | {r.accuracy - base.accuracy:+.2f} | {r.cosine_mean:.5f} | "
            f"{r.cosine_min:.5f} | {r.agreement:.2f} | {f'{ms:.2f}' if ms else '-'} | {ratio('ORT fp32')} | "
            f"{ratio('ORT dynamic int8')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(data.SIZES), default="small")
    ap.add_argument(
        "--recipes",
        default=",".join(DEFAULT_RECIPES),
        help="comma-separated edgecompile recipes (a comma before key=value continues a recipe's options)",
    )
    ap.add_argument("--runs", type=int, default=20, help="timed runs per engine (0: no latency)")
    ap.add_argument("--workdir", type=Path, default=Path("build/minilm_spam"))
    ap.add_argument("--no-own-lengths", action="store_true", help="skip the variable-length run")
    args = ap.parse_args(argv)
    try:
        rows = evaluate(args.size, tuple(re.split(r",(?![\w.-]+=)", args.recipes)), args.workdir, args.runs)
        lengths = None if args.no_own_lengths else own_lengths(args.size, args.workdir)
    except data.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_test = data.SIZES[args.size][1] or 1814
    print(table(rows, n_test))
    if lengths:
        print(
            f"\nEach email at its own length (one ranged artifact, 1..{encoder.SEQ} tokens; mean "
            f"{lengths['mean_tokens']:.0f} tokens): the {lengths['emails']} test emails in {lengths['own_s']:.1f} s "
            f"against {lengths['padded_s']:.1f} s padded to {encoder.SEQ}, "
            f"{lengths['padded_s'] / lengths['own_s']:.2f}x "
            f"faster (fp32, 1 thread); embeddings' cosine to the padded run >= {lengths['cosine_min']:.6f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
