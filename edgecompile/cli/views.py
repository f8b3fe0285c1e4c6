"""What ``edgecompile inspect`` prints for an artifact: its summary, and the per-layer views of its
quantization, low-rank factorization, hash attention and float kernels (tables, or ``--json``)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgecompile.runtime.buckets import ranged_shape

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _out_shape(ranged: dict, spec: dict) -> str:
    """An output's shape with the group names on the axes that follow one (``1xseqx384``)."""
    dims = [str(d) for d in spec["shape"]]
    for axis, group in ranged.get("outputs", {}).get(spec["name"], {}).items():
        dims[int(axis)] = group
    return "x".join(dims) or "scalar"


def inspect_artifact(path: Path, as_json: bool) -> None:
    from edgecompile.runtime.manifest import read_verified

    m = read_verified(path)
    if as_json:
        out.print_json(json.dumps(m))
        return
    out.print(
        f"{path}: {m['source'].get('file', m['source'].get('frontend'))} for {m['target']['name']}, "
        f"recipe {m['recipe']['spec']}, TVM {m['tvm_version']}, edgecompile {m['edgecompile_version']}",
        highlight=False,
    )
    ranged = m.get("ranged")
    for kind in ("inputs", "outputs"):
        for t in m[kind]:
            shape = "x".join(map(str, t["shape"]))
            if ranged:  # ranges in place of the largest sizes
                shape = ranged_shape(ranged, t) if kind == "inputs" else _out_shape(ranged, t)
            out.print(f"  {kind[:-1]} {t['name']}: {shape} {t['dtype']}", highlight=False)
    if ranged:
        for g, e in ranged["groups"].items():
            out.print(
                f"  ranged '{g}': {e['range'][0]}..{e['range'][1]}, builds at {', '.join(map(str, e['buckets']))} "
                "(an input runs on the smallest that holds it, zero-padded; outputs cut back)",
                highlight=False,
            )
    e = m.get("energy")
    if e:
        ops = ", ".join(f"{k} {v:.3g}" for k, v in e["counts"].items())
        out.print(
            f"  energy estimate {e['total_uj']:.4g} uJ per run (compute {e['compute_uj']:.4g}, memory "
            f"{e['memory_uj']:.4g}; {ops})",
            highlight=False,
        )
    mem = m.get("memory")
    if mem:
        out.print(f"  {memory_plan_line(mem)}", highlight=False)
    cm = m.get("coreml")
    if cm:
        out.print(
            f"  Core ML {cm['minimum_deployment_target']}: compute {cm['compute_precision']}, weights {cm['weights']}; "
            f"weight tensors {', '.join(f'{k} {v}' for k, v in cm['weight_dtypes'].items())}",
            highlight=False,
        )
        for t in cm["inputs"] + cm["outputs"]:
            out.print(f"  Core ML feature {t['name']}: {'x'.join(map(str, t['shape']))} {t['dtype']}", highlight=False)
        out.print(f"  Core ML ops: {', '.join(f'{k} {v}' for k, v in cm['ops'].items())}", highlight=False)
        if cm["stayed_float"]:
            out.print(f"  stayed float (Core ML has no integer-only form): {', '.join(cm['stayed_float'])}")
    for name, digest in m["files"].items():
        out.print(f"  file {name} sha256 {digest[:16]}…", highlight=False)
    from edgecompile.runtime.signature import read_signature

    sig = read_signature(path)
    out.print(
        f"  signed by key {sig['key_id']} (checked only against trusted keys: run --trusted-key KEY.pub)"
        if sig
        else "  unsigned (edgecompile sign ARTIFACT --key KEY)",
        highlight=False,
    )


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.2f} MB"


def memory_plan_line(mem: dict) -> str:
    """The manifest's memory plan in one line (``inspect``)."""
    return (
        f"memory plan: weights {_mb(mem.get('weights_bytes'))} (weights.bin, memory-mapped), activation arena "
        f"{_mb(mem.get('arena_bytes'))} in {mem.get('storages', '?')} planned storages, outputs "
        f"{_mb(mem.get('outputs_bytes'))}, largest kernel scratch {_mb(mem.get('kernel_scratch_bytes'))}, "
        f"library {_mb(mem.get('library_bytes'))}"
    )


def memory_line(res) -> str:
    """``bench``'s memory line: peak resident set beside the planned sizes."""
    plan = (
        f"; weights {_mb(res.weights_bytes)} (mapped), arena {_mb(res.arena_bytes)}"
        if res.weights_bytes is not None
        else ""
    )
    added = "" if res.load_rss_bytes is None else f", loading added {_mb(res.load_rss_bytes)}"
    return f"memory: peak RSS {_mb(res.peak_rss_bytes)} (whole process){added}, load {res.load_ms:.1f} ms{plan}"


def inspect_kernels(path: Path, as_json: bool) -> None:
    """Every kernel of an artifact with the schedule rule that produced it (manifest ``kernels``)."""
    from edgecompile.errors import ArtifactError
    from edgecompile.runtime.manifest import read_verified

    kernels = read_verified(path).get("kernels")
    if kernels is None:
        raise ArtifactError(f"{path} records no kernels (a Core ML package, or built by an older edgecompile)")
    if as_json:
        out.print_json(json.dumps(kernels))
        return
    total = sum((k["ops"] or 0) * k["calls"] for k in kernels) or 1
    table = Table(title=f"{path}: {len(kernels)} kernels, most estimated operations first")
    for col in ("kernel", "rule", "calls", "Mop per call", "share of ops"):
        table.add_column(col, justify="left" if col in ("kernel", "rule") else "right", overflow="fold")
    for k in kernels:
        ops = k["ops"]
        rule = f"[red]{k['rule']}[/red]" if k["rule"] == "fallback" else k["rule"]
        share = "-" if ops is None else f"{ops * k['calls'] / total:.1%}"
        table.add_row(k["name"], rule, str(k["calls"]), "-" if ops is None else f"{ops / 1e6:.3f}", share)
    out.print(table)


def print_profile(path: Path, prof, as_json: bool) -> None:
    """``bench --profile``: per kernel time, share, rule and GOP/s; the run and what is outside kernels."""
    if as_json:
        out.print_json(json.dumps({"artifact": str(path), **prof.to_json()}))
        return
    table = Table(
        title=f"{path}: {prof.run_ms:.3f} ms per run; kernels timed alone ({prof.repeats} calls each, median)"
    )
    for col in ("kernel", "calls", "total ms", "mean us", "% of run", "rule", "GOP/s"):
        table.add_column(col, justify="left" if col in ("kernel", "rule") else "right", overflow="fold")
    for k in prof.kernels:
        gops = "-" if k.gops is None else f"{k.gops:.1f}"
        cells = (f"{k.total_ms:.3f}", f"{k.mean_us:.1f}", f"{k.share:.1%}", k.rule or "-", gops)
        table.add_row(k.name, str(k.calls), *cells)
    out.print(table)
    out.print(
        f"outside kernels (VM, shape checks, allocation, cold caches): {prof.outside_ms:.3f} ms "
        f"({prof.outside_ms / prof.run_ms:.1%})",
        highlight=False,
    )


def _manifest_section(path: Path, key: str, missing: str) -> dict:
    """The artifact's manifest entry ``key``, or a clear error saying ``missing``."""
    from edgecompile.errors import ArtifactError
    from edgecompile.runtime.manifest import read_verified

    section = read_verified(path).get(key)
    if not section:
        raise ArtifactError(f"{path} was not compiled with {missing}")
    return section


def inspect_hash(path: Path, as_json: bool) -> None:
    h = _manifest_section(path, "hash_attention", "a hash-attention recipe (no attention data)")
    if as_json:
        out.print_json(json.dumps(h))
        return
    table = Table(title=f"{path}: attention blocks (hash-attention {h['options']}, {h['samples']} samples)")
    cols = ("block", "tokens", "heads", "converted", "fidelity (rel. err)", "c", "exact rows", "energy uJ soft -> hash")
    for col in (*cols, "why"):
        table.add_column(col)
    soft = hashed = 0.0
    for r in h["layers"]:
        e = r["energy_hash_uj"] if r["converted"] else r["energy_softmax_uj"]
        soft, hashed = soft + r["energy_softmax_uj"], hashed + e
        fid = f"{r['fidelity_relerr']:.4f}" if "fidelity_relerr" in r else "-"
        table.add_row(
            r["name"], str(r["seq"]), str(r["heads"]), "yes" if r["converted"] else "no", fid, str(r.get("c", "-")),
            ",".join(map(str, r.get("global_queries") or [])) or "-",
            f"{r['energy_softmax_uj']:.4g} -> {r['energy_hash_uj']:.4g}", r["reason"],
        )  # fmt: skip
    out.print(table)
    d, d_all = h["drop"] or {}, h["drop_no_gate"] or {}
    out.print(
        f"attention energy {soft:.4g} -> {hashed:.4g} uJ ({100 * (1 - hashed / soft) if soft else 0:.1f}% less); "
        f"output drop on held-out calibration samples {d.get('drop', 0):.4g} (every eligible block converted: "
        f"{d_all.get('drop', 0):.4g})",
        highlight=False,
    )


def inspect_lowrank(path: Path, as_json: bool) -> None:
    lr = _manifest_section(path, "lowrank", "a lowrank recipe (no factorization data)")
    if as_json:
        out.print_json(json.dumps(lr))
        return
    table = Table(title=f"{path}: low-rank layers ({lr['budget']}, {lr['method']} SVD, {lr['samples']} samples)")
    for col in ("layer", "role", "in x out", "rank", "params", "error", "ms dense", "ms factored", "kept dense"):
        table.add_column(col)
    for r in lr["layers"]:
        fac = f"{r['factored_ms']:.3f}" if r["factored_ms"] is not None else "-"
        params = f"{r['params_before']} -> {r['params_after']}"
        table.add_row(
            r["name"], r["role"], "x".join(map(str, r["shape"])), str(r["rank"] or "-"), params,
            f"{r['error']:.4f}", f"{r['dense_ms']:.3f}", fac, r["kept_dense"] or "",
        )  # fmt: skip
    out.print(table)
    ratio = lr["params_after"] / max(lr["params_before"], 1)
    err = ", ".join(f"{k} {v}" for k, v in lr["model_error"].items() if k != "drop")
    out.print(
        f"parameters of these layers: {lr['params_before']} -> {lr['params_after']} ({ratio:.2f}x)"
        + (f"; model output vs float on calibration samples: {err}" if err else ""),
        highlight=False,
    )


def inspect_float_ops(path: Path, as_json: bool) -> None:
    from edgecompile.errors import ArtifactError
    from edgecompile.runtime.manifest import read_verified

    m = read_verified(path)
    rows = m.get("float_ops")
    if rows is None and m.get("coreml"):
        stayed = m["coreml"]["stayed_float"]
        if as_json:
            out.print_json(json.dumps({"coreml": True, "stayed_float": stayed}))
            return
        out.print(
            f"{path}: a Core ML package computing in {m['coreml']['compute_precision']}"
            + (f"; integer-only ops that stayed float: {', '.join(stayed)}" if stayed else ""),
            highlight=False,
        )
        return
    if rows is None:
        raise ArtifactError(f"{path} was compiled before float kernels were recorded: compile it again")
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"{path}: kernels with float arithmetic (recipe {m['recipe']['spec']})")
    for col in ("kernel", "role", "float arithmetic", "in", "out"):
        table.add_column(col)
    for r in rows:
        role = r["role"] if r["role"] != "float op" else "[yellow]float op[/]"
        table.add_row(r["kernel"], role, ", ".join(r["float"]), ", ".join(r["in"]), r["out"])
    out.print(table)
    inside = sum(r["role"] == "float op" for r in rows)
    out.print(
        f"{len(rows)} kernels with float arithmetic, {inside} of them between the input quantize and "
        "the output dequantize",
        highlight=False,
    )


def _act(row: dict) -> str:
    """``static``/``dynamic`` and the gain run-time scales were measured to give (int8:act=)."""
    gain = f" ({row['dynamic_gain_db']:+.1f} dB)" if "dynamic_gain_db" in row else ""
    return row["act"] + gain if "act" in row else "-"


def inspect_quant(path: Path, as_json: bool) -> None:
    q = _manifest_section(path, "quantization", "a quantizing recipe (no per-layer data)")
    rows = sorted(q["layers"], key=lambda r: (not r["quantized"], r["sqnr_db"]))
    if as_json:
        out.print_json(json.dumps({**q, "layers": rows}))
        return
    obs = q["observer"] + (f" {q['percentile']}" if q.get("percentile") else "")
    table = Table(title=f"{path}: integer layers, worst SQNR first ({obs}, {q['samples']} calibration samples)")
    for col in ("layer", "kind", "integer", "SQNR dB", "act scales", "scale in", "scale out", "weight scales"):
        table.add_column(col)

    def fmt(v):
        if v is None:
            return "-"
        return ", ".join(f"{x:.3g}" for x in v) if isinstance(v, list) else f"{v:.3g}"

    for r in rows:
        ws = f"{r['weight_scale_min']:.3g}..{r['weight_scale_max']:.3g}" if "weight_scale_min" in r else "-"
        table.add_row(
            r["name"],
            r["kind"] + (f" ({r['impl']})" if "impl" in r else ""),
            "yes" if r["quantized"] else "float",
            f"{r['sqnr_db']:.1f}",
            _act(r),
            fmt(r.get("scale_in")),
            fmt(r.get("scale_out")),
            ws,
        )
    out.print(table)
    if q["kept_float"]:
        out.print(f"kept in float: {', '.join(q['kept_float'])}", highlight=False)
    if q.get("budget"):
        _print_budget(q["budget"])


def _print_budget(b: dict) -> None:
    """The accuracy budget's outcome (int8:max_drop=) and what it changed, layer by layer."""
    out.print(
        f"accuracy budget: drop {b['drop']:.4g} within {b['max_drop']:.4g} ({b['metric']}, {b['held_out']} samples); "
        f"as calibrated {b['drop_before']:.4g}, {len(b['tries'])} builds tried",
        highlight=False,
    )
    for row in b["plan"]:
        out.print(f"  {row['layer']}: {row['mode']} ({row['why']})", highlight=False)
