"""edgecompile's int8 recipes against ONNX Runtime and OpenVINO (with NNCF's int8), in one process:
speed at 1 thread, batch 1, seq 128, and accuracy against ORT fp32.

Two models: ``minilm-sized``, the MiniLM-L6-sized encoder of ``_common.minilm_onnx`` (random seeded
weights, TorchScript export; random token ids from ``_common.text_samples``), and ``minilm-real``,
the real all-MiniLM-L6-v2 sentence encoder (``examples/minilm_spam/encoder.py``, dynamo export,
mean-pooled unit embedding; texts from the SpamAssassin split of ``examples/minilm_spam/data.py``:
the first ``--calib`` calibration emails and the first 8 test emails).

Engines per model, all at 1 thread:

- ORT fp32 and ORT ``quantize_dynamic`` (int8 weights, activations quantized at run time);
- OpenVINO fp32 (``INFERENCE_PRECISION_HINT=f32``) and at its default precision (bf16 on a CPU
  with avx512_bf16), 1 inference thread, 1 stream, latency hint;
- OpenVINO on the model quantized by NNCF (``nncf.quantize``, ``ModelType.TRANSFORMER``, on the
  same calibration samples), run with the f32 hint (non-quantized ops in fp32; the int8 reference
  of the ratios) and with the default hint;
- edgecompile fp32, ``int8`` and ``int8-integer-only`` (calibrated on the same samples, as an
  ``.npz``), and ``bf16`` where this CPU has avx512_bf16, loaded with ``edgecompile.load``.

Printed: the CPU (name, family/model, avx512_vnni / avx512_bf16), then per model a markdown table
of each engine's median latency over ``--runs`` (taken in three alternating rounds so background
load hits every engine alike), its ratio to ORT ``quantize_dynamic`` and to OpenVINO+NNCF int8
(below 1: faster), the precision OpenVINO reports, and the output's cosine against ORT fp32 on 8
held-out inputs (mean / min; ``last_hidden_state`` of the sized encoder, ``sentence_embedding`` of
the real one); for each edgecompile build the share of the run outside GEMM kernels (1 - the
``Matmul`` rules' share of ``profile(threads=1)``) and its largest non-GEMM kernels. Progress goes
to stderr, the tables to stdout; ``--json`` writes the figures too.

    python benchmarks/int8_peers.py [--runs 30] [--models minilm-sized,minilm-real] [--calib 32] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    SEQ,
    cosine,
    cpu_header,
    minilm_onnx,
    openvino_request,
    ort_dynamic_int8,
    ort_session,
    sampler,
    stacked,
    text_samples,
    time_engines,
    timed_compile,
)

MODELS = ("minilm-sized", "minilm-real")
RECIPES = {"fp32": "fp32", "int8": "int8, float nonlinears", "int8-integer-only": "int8, integer-only"}
HELD_OUT = 8
OV_BASE = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
ORT_DYN = "ORT quantize_dynamic int8"
OV_INT8 = "OpenVINO NNCF int8 (f32 hint)"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Case:
    """One model to compare: its ONNX file, the output compared, and the inputs."""

    key: str
    label: str
    path: Path
    output: str
    calib: list[dict]  # {input: [1, SEQ] int64} each
    held_out: list[dict]
    input_shapes: dict | None = None  # for a dynamic-shape export


@dataclass
class Engine:
    name: str
    run: object  # feeds -> the compared output
    sample: object  # () -> ms of one call on the timing feeds
    precision: str = "-"


def sized_case(workdir: Path, n_calib: int) -> Case:
    _say("minilm-sized: exporting the MiniLM-L6-sized encoder (random seeded weights)")
    return Case(
        "minilm-sized", "MiniLM-L6-sized encoder (random seeded weights, random token ids)",
        minilm_onnx(workdir), "last_hidden_state", text_samples(n_calib, seed=1), text_samples(HELD_OUT, seed=2),
    )  # fmt: skip


def real_case(workdir: Path, n_calib: int) -> Case:
    from minilm_spam import data, encoder

    _say("minilm-real: SpamAssassin split, tokenizer, dynamo export of all-MiniLM-L6-v2")
    split = data.splits("small")
    tok = encoder.tokenizer()

    def rows(texts: list[str]) -> list[dict]:
        feeds = encoder.tokenize(tok, texts)
        return [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(len(texts))]

    with contextlib.redirect_stdout(sys.stderr):  # the exporter's progress lines
        path = encoder.export(workdir / "minilm-real" / "minilm.onnx", tok)
    return Case(
        "minilm-real", "all-MiniLM-L6-v2 sentence encoder (SpamAssassin emails)", path, encoder.OUTPUT,
        rows(split["calib"][0][:n_calib]), rows(split["test"][0][:HELD_OUT]),
        {k: (1, SEQ) for k in encoder.INPUTS},
    )  # fmt: skip


CASES = {"minilm-sized": sized_case, "minilm-real": real_case}


# --- the engines ----------------------------------------------------------------------------


def ort_engines(case: Case, feeds: dict, workdir: Path) -> list[Engine]:
    _say(f"{case.key}: ORT quantize_dynamic")
    dyn = ort_dynamic_int8(case.path, workdir / f"{case.key}.dyn.onnx")
    out = []
    for name, path, precision in (("ORT fp32", case.path, "fp32"), (ORT_DYN, dyn, "int8")):
        sess = ort_session(path, 1)
        run = lambda f, s=sess: s.run([case.output], f)[0]  # noqa: E731
        out.append(Engine(name, run, sampler(lambda s=sess: s.run(None, feeds)), precision))
    return out


def _ov_engine(name: str, model, config: dict, output: str, feeds: dict) -> Engine:
    request, precision = openvino_request(model, {**OV_BASE, **config})
    index = next(i for i, port in enumerate(request.model_outputs) if output in port.get_names())
    return Engine(name, lambda f: np.asarray(request.infer(f)[index]), sampler(lambda: request.infer(feeds)), precision)


def openvino_engines(case: Case, feeds: dict) -> tuple[list[Engine], str | None]:
    """OpenVINO fp32, default precision, and NNCF int8 with the f32 and the default hint; or a note
    where OpenVINO or NNCF is not importable."""
    try:
        import nncf
        import openvino as ov
    except ImportError as e:
        return [], f"OpenVINO / NNCF not importable ({e}); install with pip install -e '.[bench]'"

    def read():
        model = ov.Core().read_model(str(case.path))
        model.reshape({port.get_any_name(): list(feeds[port.get_any_name()].shape) for port in model.inputs})
        return model

    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    engines = [
        _ov_engine("OpenVINO fp32", read(), f32, case.output, feeds),
        _ov_engine("OpenVINO default precision", read(), {}, case.output, feeds),
    ]
    _say(f"{case.key}: nncf.quantize on {len(case.calib)} calibration samples")
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars
        quantized = nncf.quantize(
            read(), nncf.Dataset(case.calib), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(case.calib)
        )
    _say(f"  quantized ({time.perf_counter() - t0:.1f} s)")
    engines.append(_ov_engine(OV_INT8, quantized, f32, case.output, feeds))
    engines.append(_ov_engine("OpenVINO NNCF int8 (default hint)", quantized, {}, case.output, feeds))
    for e in engines[2:]:
        e.precision = f"int8, other ops {e.precision}"
    return engines, None


def edgecompile_engines(case: Case, feeds: dict, workdir: Path) -> tuple[list[Engine], dict]:
    """edgecompile's builds (each recipe calibrated on the case's samples, as an .npz) and the
    loaded models by recipe."""
    import edgecompile

    npz = workdir / f"{case.key}-calib.npz"
    np.savez(npz, **stacked(case.calib))
    engines, models = [], {}
    from edgecompile.runtime.hostinfo import cpu_flags

    recipes = {**RECIPES, **({"bf16": "bf16 matmuls, other ops f32"} if "avx512_bf16" in cpu_flags() else {})}
    for rec, precision in recipes.items():
        calibrated = rec.startswith("int8")
        _say(f"{case.key}: compiling edgecompile {rec}" + (f" ({len(case.calib)} samples)" if calibrated else ""))
        art, secs = timed_compile(
            case.path, output=workdir / f"{case.key}-{rec}", recipe=rec, input_shapes=case.input_shapes,
            calib=npz if calibrated else None, force=True,
        )  # fmt: skip
        _say(f"  compiled ({secs:.1f} s)")
        m = models[rec] = edgecompile.load(art)
        run = lambda f, m=m: m.run(f)[case.output]  # noqa: E731
        engines.append(
            Engine(
                f"edgecompile {rec}", run, lambda m=m: m.benchmark(runs=1, warmup=0, feeds=feeds).median_ms, precision
            )
        )
    return engines, models


def gemm_split(model, feeds: dict, runs: int, top: int = 3, tries: int = 3) -> dict:
    """The run's share in GEMM kernels (a rule with ``Matmul``) and outside them, from ``profile``:
    of ``tries`` profiles the one with the fastest whole run (the kernels are timed in short
    isolated bursts, the whole run over longer: background load inflates the latter more)."""
    profs = [model.profile(threads=1, feeds=feeds, runs=min(runs, 10)) for _ in range(tries)]
    prof = min(profs, key=lambda p: p.run_ms)
    gemm = [k for k in prof.kernels if k.rule and "Matmul" in k.rule]
    gemm_share = sum(k.share for k in gemm)
    rest = [k for k in prof.kernels if k not in gemm][:top]
    return {
        "run_ms": prof.run_ms,
        "gemm_ms": sum(k.total_ms for k in gemm),
        "gemm_share": gemm_share,
        "non_gemm_share": 1 - gemm_share,
        "outside_ms": prof.outside_ms,
        "top_non_gemm": [{"name": k.name, "rule": k.rule, "share": k.share, "ms": k.total_ms} for k in rest],
    }


# --- one model ------------------------------------------------------------------------------


def bench_case(case: Case, runs: int, workdir: Path) -> dict:
    feeds = case.held_out[0]
    engines = ort_engines(case, feeds, workdir)
    ov, note = openvino_engines(case, feeds)
    if note:
        _say(f"  note: {note}")
    engines += ov
    ec, models = edgecompile_engines(case, feeds, workdir)
    engines += ec
    from edgecompile.runtime import set_threads

    set_threads(1)

    _say(f"{case.key}: accuracy on {len(case.held_out)} held-out inputs")
    ref = [engines[0].run(f) for f in case.held_out]  # ORT fp32
    rows = {}
    for e in engines:
        c = [cosine(a, e.run(f)) for a, f in zip(ref, case.held_out)]
        rows[e.name] = {"precision": e.precision, "cosine_mean": float(np.mean(c)), "cosine_min": float(np.min(c))}

    _say(f"{case.key}: timing {len(engines)} engines, {runs} runs each in alternating rounds, 1 thread")
    for name, ts in time_engines({e.name: e.sample for e in engines}, runs).items():
        rows[name].update(ms=statistics.median(ts), min_ms=min(ts))

    _say(f"{case.key}: profiling the edgecompile builds")
    for rec, m in models.items():
        rows[f"edgecompile {rec}"]["profile"] = gemm_split(m, feeds, runs)
    return {"key": case.key, "label": case.label, "output": case.output, "calib": len(case.calib),
            "held_out": len(case.held_out), "engines": rows, "openvino_note": note}  # fmt: skip


def table(res: dict, runs: int) -> str:
    rows = res["engines"]
    dyn = rows[ORT_DYN]["ms"]
    ov8 = rows[OV_INT8]["ms"] if OV_INT8 in rows else None
    lines = [
        f"### {res['label']}",
        "",
        f"batch 1, seq {SEQ}, 1 thread, median of {runs} runs; ratios: engine / peer (below 1: faster); cosine of "
        f"`{res['output']}` vs ORT fp32 on {res['held_out']} held-out inputs; {res['calib']} calibration samples",
        "",
        "| engine | precision | ms | / ORT dyn int8 | / OV NNCF int8 | cosine mean | cosine min | non-GEMM share |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        p = r.get("profile")
        vs_ov = f"{r['ms'] / ov8:.2f}" if ov8 else "-"
        non_gemm = f"{100 * p['non_gemm_share']:.1f}%" if p else ""
        lines.append(
            f"| {name} | {r['precision']} | {r['ms']:.2f} | {r['ms'] / dyn:.2f} | {vs_ov} | "
            f"{r['cosine_mean']:.5f} | {r['cosine_min']:.5f} | {non_gemm} |"
        )
    if res["openvino_note"]:
        lines += ["", f"OpenVINO skipped: {res['openvino_note']}"]
    if "edgecompile bf16" in rows:
        bf = rows["edgecompile bf16"]["ms"]
        ov = rows.get("OpenVINO default precision", {}).get("ms")
        lines += [
            "",
            f"edgecompile bf16 / edgecompile fp32: {bf / rows['edgecompile fp32']['ms']:.2f}"
            + (f"; / OpenVINO default precision: {bf / ov:.2f}" if ov else ""),
        ]
    lines.append("")
    for name, r in rows.items():
        p = r.get("profile")
        if p:
            top = ", ".join(f"{k['name']} ({k['rule'] or '-'}) {100 * k['share']:.1f}%" for k in p["top_non_gemm"])
            lines.append(
                f"- {name} profile: run {p['run_ms']:.2f} ms, GEMM kernels {p['gemm_ms']:.2f} ms "
                f"({100 * p['gemm_share']:.1f}%), outside kernels {p['outside_ms']:.2f} ms; largest non-GEMM: {top}"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="timed calls per engine and model")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--calib", type=int, default=32, help="calibration samples for every quantizer (16-32)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(MODELS)}")
    import torch

    torch.set_num_threads(1)  # no idle torch workers competing with the timed engines
    host = cpu_header()
    flags = ", ".join(f"{f} {'yes' if host['flags'][f] else 'no'}" for f in ("avx512_vnni", "avx512_bf16"))
    print(f"CPU: {host['cpu']} (family {host['family']}, model {host['model']}, {host['cpus']} CPUs usable); {flags}")
    results = []
    with tempfile.TemporaryDirectory(prefix="ec-int8-peers-") as tmp:
        for key in keys:
            res = bench_case(CASES[key](Path(tmp), args.calib), args.runs, Path(tmp))
            print("\n" + table(res, args.runs), flush=True)
            results.append(res)
    if args.json:
        args.json.write_text(json.dumps({**host, "runs": args.runs, "results": results}, indent=1))
        _say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
