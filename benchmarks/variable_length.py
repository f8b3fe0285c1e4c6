"""Variable-length inputs on the real all-MiniLM-L6-v2: one ranged artifact (1..MAX tokens) against
ONNX Runtime on the same dynamic-axis ONNX file, and against a static artifact built for exactly
each length, at 1 thread, batch 1, in one process (alternating rounds, medians).

Per length: ORT fp32 and ORT ``quantize_dynamic`` int8; ours fp32 and int8, ranged and static;
the ratios the variable-length issue asks for (ranged fp32 / ORT fp32, ranged int8 / ORT dynamic,
ranged / static); the ranged fp32 output's distance to ORT fp32 (of its range); and, for the
ranged integer-only build, whether a length-L input padded by the caller (mask 0) to a length
that runs on the next build gives the unpadded answer bit for bit; and whether a ranged and a
static 64-token integer-only artifact calibrated on the same samples agree bit for bit. Artifact sizes: the ranged one
against the static one at MAX. Texts: SpamAssassin emails (``examples/minilm_spam``), each
truncated to the length; calibration on emails of many lengths for the ranged builds, the same
emails at exactly L for each static one.

    python benchmarks/variable_length.py [--lengths 16,32,64,128,256] [--runs 20] [--calib 32] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    artifact_mb,
    cpu_header,
    ort_dynamic_int8,
    ort_session,
    sampler,
    time_engines,
    timed_compile,
)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _tokens(tok, texts: list[str], length: int, inputs) -> list[dict]:
    """Each text as ``{input: [1, n]}`` with ``n`` its own token count, at most ``length``."""
    out = []
    for t in texts:
        enc = tok([t], truncation=True, max_length=length, return_tensors="np")
        out.append({k: enc[k].astype(np.int64) for k in inputs})
    return out


def _at(tok, texts: list[str], length: int, inputs) -> dict:
    """The first text that reaches ``length`` tokens, cut to exactly ``length``."""
    for t in texts:
        enc = tok([t], truncation=True, max_length=length, return_tensors="np")
        if enc["input_ids"].shape[1] == length:
            return {k: enc[k].astype(np.int64) for k in inputs}
    raise SystemExit(f"no text reaches {length} tokens")


def _padded(feeds: dict, to: int) -> dict:
    out = {}
    for k, v in feeds.items():
        p = np.zeros((1, to), np.int64)
        p[:, : v.shape[1]] = v
        out[k] = p
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="16,32,64,128,256")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    lengths = [int(v) for v in args.lengths.split(",")]
    top = max(lengths)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from minilm_spam import data, encoder

    import edgecompile

    host = cpu_header()
    _say(f"CPU: {host['cpu']} (family {host['family']} model {host['model']}), 1 thread")
    work = Path(tempfile.mkdtemp(prefix="ec-varlen-"))
    tok = encoder.tokenizer()
    split = data.splits("small")
    with contextlib.redirect_stdout(sys.stderr):
        onnx = encoder.export(work / "minilm.onnx", tok)
    inputs, output = encoder.INPUTS, encoder.OUTPUT
    calib_texts, test_texts = split["calib"][0][: args.calib], split["test"][0]
    ranged_shape = {k: f"1x1..{top}" for k in inputs}
    compiled: dict[str, Path] = {}
    secs: dict[str, float] = {}

    def build(name: str, **kw) -> None:
        _say(f"compiling {name}")
        compiled[name], secs[name] = timed_compile(onnx, target="native", output=work / name, force=True, **kw)

    build("ranged fp32", input_shapes=ranged_shape)
    varied = _tokens(tok, calib_texts, top, inputs)  # each email at its own length, up to top
    build("ranged int8", input_shapes=ranged_shape, recipe="int8", calib=varied)
    build("ranged int8-integer-only", input_shapes=ranged_shape, recipe="int8-integer-only", calib=varied)
    for n in lengths:
        exact = [{k: np.asarray(encoder.tokenize(tok, [t], n)[k]) for k in inputs} for t in calib_texts]
        build(f"static fp32 {n}", input_shapes={k: f"1x{n}" for k in inputs})
        build(f"static int8 {n}", input_shapes={k: f"1x{n}" for k in inputs}, recipe="int8", calib=exact)
    # a ranged and a static integer-only artifact calibrated on the same samples (the emails at exactly
    # SAME tokens): the same integers for every input of that length, bit for bit?
    same_len = min(64, top)
    exact = [{k: np.asarray(encoder.tokenize(tok, [t], same_len)[k]) for k in inputs} for t in calib_texts]
    build("ranged int8-integer-only, same calibration", input_shapes=ranged_shape, recipe="int8-integer-only",
          calib=exact)  # fmt: skip
    build(f"static int8-integer-only {same_len}", input_shapes={k: f"1x{same_len}" for k in inputs},
          recipe="int8-integer-only", calib=exact)  # fmt: skip
    _say("ORT quantize_dynamic")
    dyn = ort_dynamic_int8(onnx, work / "minilm.dyn.onnx")
    ort32, ortq = ort_session(onnx, 1), ort_session(dyn, 1)
    models = {k: edgecompile.load(v) for k, v in compiled.items()}

    rows, exact_bits = [], {}
    for n in lengths:
        feeds = _at(tok, test_texts, n, inputs)
        engines = {
            "ORT fp32": sampler(lambda f=feeds: ort32.run(None, f)),
            "ORT dynamic int8": sampler(lambda f=feeds: ortq.run(None, f)),
        }
        for kind in ("fp32", "int8"):
            for which in ("ranged", "static"):
                m = models[f"ranged {kind}" if which == "ranged" else f"static {kind} {n}"]
                engines[f"{which} {kind}"] = sampler(lambda m=m, f=feeds: m.run(f))
        _say(f"timing {n} tokens")
        med = {k: statistics.median(v) for k, v in time_engines(engines, args.runs).items()}
        ref = ort32.run([output], feeds)[0]
        got = models["ranged fp32"].run(feeds)[output]
        io = models["ranged int8-integer-only"]
        # one padded token (mask 0) moves the input to the next build up: the same answer, bit for bit?
        same = np.array_equal(io.run(feeds)[output], io.run(_padded(feeds, n + 1))[output]) if n < top else None
        exact_bits[n] = same
        rows.append({
            "tokens": n, **{k: round(v, 3) for k, v in med.items()},
            "fp32/ORT": med["ranged fp32"] / med["ORT fp32"],
            "int8/ORT dyn": med["ranged int8"] / med["ORT dynamic int8"],
            "fp32 ranged/static": med["ranged fp32"] / med["static fp32"],
            "int8 ranged/static": med["ranged int8"] / med["static int8"],
            "fp32 max|d| / range": float(np.abs(got - ref).max() / (ref.max() - ref.min())),
            "integer-only padded == exact": "-" if same is None else bool(same),
        })  # fmt: skip
    sizes = {f"{k} MB": artifact_mb(compiled[k]) for k in ("ranged fp32", f"static fp32 {top}", "ranged int8",
                                                            f"static int8 {top}")}  # fmt: skip
    cols = ["tokens", "ORT fp32", "ORT dynamic int8", "ranged fp32", "static fp32", "ranged int8", "static int8",
            "fp32/ORT", "int8/ORT dyn", "fp32 ranged/static", "int8 ranged/static", "fp32 max|d| / range",
            "integer-only padded == exact"]  # fmt: skip
    print(f"all-MiniLM-L6-v2, one artifact for 1..{top} tokens; {host['cpu']} (family {host['family']} model "
          f"{host['model']}), 1 thread, median ms of {args.runs}")  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = [f"{r[c]:.3g}" if isinstance(r[c], float) and c.startswith("fp32 max") else
                 (f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c])) for c in cols]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    print("artifact sizes: " + ", ".join(f"{k} {v:.1f}" for k, v in sizes.items()))
    fp32_ratio = sizes["ranged fp32 MB"] / sizes[f"static fp32 {top} MB"]
    int8_ratio = sizes["ranged int8 MB"] / sizes[f"static int8 {top} MB"]
    print(f"  ranged / static: fp32 {fp32_ratio:.3f}x, int8 {int8_ratio:.3f}x")
    print("compile s: " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items() if k.startswith("ranged")))
    same_ranged = models["ranged int8-integer-only, same calibration"]
    same_static = models[f"static int8-integer-only {same_len}"]
    tests = [_at(tok, [t], same_len, inputs) for t in test_texts if len(tok(t)["input_ids"]) >= same_len][:20]
    equal = [np.array_equal(same_ranged.run(f)[output], same_static.run(f)[output]) for f in tests]
    print(f"integer-only, ranged vs static {same_len}-token artifact on the same calibration: "
          f"{sum(equal)}/{len(equal)} test emails bit for bit equal")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"host": host, "rows": rows, "sizes": sizes, "compile_s": secs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
