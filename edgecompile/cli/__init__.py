"""The ``edgecompile`` command: thin wrappers over the Python API.

Every user error prints one line, ``error: …``, and exits with status 2; an unexpected failure
prints ``internal error: …`` and exits with status 3 (set ``EDGECOMPILE_DEBUG=1`` for the
traceback); Ctrl-C exits 130 (:mod:`edgecompile.cli.handling`). ``run`` and ``bench`` load TVM in
runtime-only mode (``TVM_USE_RUNTIME_LIB=1``): they
never need the compiler.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgecompile.cli.handling import handle_errors
from edgecompile.cli.inputs import load_inputs
from edgecompile.cli.security import RequireSignatureOption, TrustedKeyOption, trusted_keys
from edgecompile.cli.security import register as register_security_commands
from edgecompile.cli.views import (
    err,
    inspect_artifact,
    inspect_float_ops,
    inspect_hash,
    inspect_kernels,
    inspect_lowrank,
    inspect_quant,
    memory_line,
    out,
    print_profile,
)
from edgecompile.errors import InputMismatchError

app = typer.Typer(
    name="edgecompile",
    help="Compile exported transformers (ONNX or PyTorch) into fast integer-first builds for a "
    "device, run them with a small runtime, and measure them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


BUCKETS_HELP = ("Sizes a ranged dimension is built for, GROUP=S1,S2,... (GROUP: its name in the model, e.g. seq; must "
                "include the range's upper end) [default: powers of two down from it, at most 5].")  # fmt: skip


@app.command("compile")
@handle_errors
def compile_cmd(
    model: Annotated[Path, typer.Argument(help="ONNX file (external data next to it) or a torch.export .pt2 file.")],
    target: Annotated[
        str,
        typer.Option("--target", "-t", help="Target profile name (see `edgecompile targets`) or a profile .toml path."),
    ] = "native",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Artifact directory to write [default: build/<model>-<target>]."),
    ] = None,
    input_shape: Annotated[
        list[str] | None,
        typer.Option(
            "--input-shape",
            help="Shape of an input, NAME=1x128; repeat per input. Required for symbolic dimensions. A range LO..HI "
            "(NAME=1x1..256) makes one artifact that takes any size in it.",
        ),
    ] = None,
    buckets: Annotated[list[str] | None, typer.Option("--buckets", help=BUCKETS_HELP)] = None,
    input_dtype: Annotated[
        list[str] | None, typer.Option("--input-dtype", help="Override an input dtype, NAME=int32; repeat per input.")
    ] = None,
    recipe: Annotated[
        str,
        typer.Option(
            "--recipe", "-r", help="Recipe PART[+PART...] with PART=preset[:key=value,...], or a recipe .toml file."
        ),
    ] = "fp32",
    tune: Annotated[
        int | None,
        typer.Option(
            "--tune",
            help="Tune the kernels with up to N MetaSchedule trials before building (CPU targets; Ctrl-C keeps "
            "what was found). Kernels already in the tuning database are reused.",
        ),
    ] = None,
    tuning_db: Annotated[
        Path | None,
        typer.Option("--tuning-db", help="Tuning database directory [default: ~/.cache/edgecompile/tuning]."),
    ] = None,
    calib: Annotated[
        Path | None,
        typer.Option(
            "--calib",
            help="Calibration data for the int8 and lowrank recipes: an .npz with one array per input stacked along a "
            "leading sample axis, or a directory of them.",
        ),
    ] = None,
    keep_float: Annotated[
        str | None,
        typer.Option(
            "--keep-float",
            help="Layers to leave in float, NAME,... (names from `inspect --quant`, or patterns like 'matmul.*').",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing artifact at -o even if it holds files it does not list."),
    ] = False,
    sign: Annotated[
        Path | None, typer.Option("--sign", help="Sign the artifact with this private key (`edgecompile keygen`).")
    ] = None,
) -> None:
    """Compile MODEL for a target into an artifact directory (library + manifest.json)."""
    import time

    from edgecompile.api import compile as compile_model
    from edgecompile.frontend.spec import parse_assignments, parse_sizes

    shapes = parse_assignments(input_shape, "--input-shape")
    dtypes = parse_assignments(input_dtype, "--input-dtype")
    sizes = {g: parse_sizes(v) for g, v in parse_assignments(buckets, "--buckets").items()}
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

    t0 = time.perf_counter()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        stage = bar.add_task("compiling", total=None)
        tuning = {}

        def on_tune(done: int, total: int, _elapsed: float) -> None:
            if "task" not in tuning:
                tuning["task"] = bar.add_task("tuning trials", total=total)
            bar.update(tuning["task"], completed=done)

        calib_tasks = {}

        def on_calib(what: str, done: int, total: int) -> None:
            if what not in calib_tasks:
                calib_tasks[what] = bar.add_task(what, total=total)
            bar.update(calib_tasks[what], completed=done)

        path = compile_model(
            str(model),
            target,
            output,
            input_shapes=shapes,
            input_dtypes=dtypes,
            recipe=recipe,
            progress=lambda msg: bar.update(stage, description=msg),
            tune=tune,
            tuning_db=tuning_db,
            tune_progress=on_tune,
            calib=calib,
            keep_float=[k for k in (keep_float or "").split(",") if k.strip()] or None,
            calib_progress=on_calib,
            force=force,
            buckets=sizes or None,
            sign=sign,
        )
    manifest = json.loads((path / "manifest.json").read_text())
    lib = path / manifest["library"]
    size = sum(f.stat().st_size for f in lib.rglob("*") if f.is_file()) if lib.is_dir() else lib.stat().st_size
    weights = manifest.get("weights")
    held = f" + {weights['file']}, {weights['bytes'] / 1e6:.1f} MB" if weights else ""
    out.print(
        f"compiled {model.name} for {manifest['target']['name']} in {time.perf_counter() - t0:.1f} s "
        f"-> {path}/ ({lib.name}, {size / 1e6:.1f} MB{held})",
        highlight=False,
    )
    if manifest.get("link_command"):
        out.print(
            f"no cross compiler found: link on a machine with the toolchain: {manifest['link_command']}",
            highlight=False,
        )


def _runtime_only() -> None:
    """Load only TVM's runtime library: run and bench never need the compiler."""
    if "tvm" not in sys.modules:
        os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")


def _check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise InputMismatchError(f"--threads must be at least 1, got {threads}")


def _npz_path(output: Path) -> Path:
    """Where ``--output`` writes: an ``.npz`` file in an existing directory (numpy adds the suffix)."""
    if output.is_dir():
        raise InputMismatchError(f"--output {output} is a directory; give a file name such as {output}/out.npz")
    if not output.parent.is_dir():
        raise InputMismatchError(f"--output {output}: the directory {output.parent} does not exist")
    return output if output.suffix == ".npz" else output.with_name(output.name + ".npz")


@app.command("run")
@handle_errors
def run_cmd(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory made by `edgecompile compile`.")],
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="NAME=file.npy per input, or one .npz holding every input by name."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the outputs to this .npz file.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads to use [default: all cores].")] = None,
    trusted_key: TrustedKeyOption = None,
    require_signature: RequireSignatureOption = False,
) -> None:
    """Run ARTIFACT once on the given inputs and print or save the outputs."""
    _runtime_only()
    import numpy as np

    from edgecompile.runtime import load

    _check_threads(threads)
    target = _npz_path(output) if output else None
    model = load(artifact, trusted_keys(trusted_key, require_signature))
    feeds = load_inputs(input)
    if not feeds:
        raise InputMismatchError(
            "no inputs given; pass --input NAME=file.npy for each of: " + ", ".join(i["name"] for i in model.inputs)
        )
    results = model.run(feeds, threads=threads)
    if target:
        np.savez(target, **results)
        out.print(f"wrote {len(results)} output(s) to {target}", highlight=False)
    for name, value in results.items():
        flat = value.reshape(-1)
        preview = np.array2string(flat[:6], precision=5, separator=", ")
        out.print(
            f"{name}: shape {'x'.join(map(str, value.shape))} {value.dtype} {preview}{' …' if flat.size > 6 else ''}",
            highlight=False,
        )


@app.command("bench")
@handle_errors
def bench_cmd(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory made by `edgecompile compile`.")],
    runs: Annotated[int, typer.Option("--runs", help="Timed runs.")] = 50,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs first.")] = 5,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads to use [default: all cores].")] = None,
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="Inputs as for `run` [default: random floats, ones for integers]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    profile: Annotated[
        bool,
        typer.Option("--profile", help="Per kernel: calls, time, share of the run, schedule rule, GOP/s."),
    ] = False,
    input_shape: Annotated[
        list[str] | None,
        typer.Option("--input-shape", help="Time a ranged artifact at one size, NAME=1x16 (its group follows)."),
    ] = None,
    trusted_key: TrustedKeyOption = None,
    require_signature: RequireSignatureOption = False,
) -> None:
    """Time ARTIFACT: median, p90 and min latency over --runs calls; peak RSS, load time and the memory plan."""
    _runtime_only()
    from edgecompile.runtime import load

    _check_threads(threads)
    if warmup < 0:
        raise InputMismatchError(f"--warmup must be 0 or more, got {warmup}")
    model = load(artifact, trusted_keys(trusted_key, require_signature))
    feeds = load_inputs(input) or None
    if input_shape:
        from edgecompile.frontend.spec import parse_assignments, parse_shape

        if feeds:
            raise InputMismatchError("give --input or --input-shape, not both: the inputs have their own shapes")
        given = {k: parse_shape(v) for k, v in parse_assignments(input_shape, "--input-shape").items()}
        feeds = model.example_inputs(shapes=given)
    if profile:
        print_profile(artifact, model.profile(threads=threads, feeds=feeds, runs=runs), as_json)
        return
    res = model.benchmark(runs=runs, threads=threads, warmup=warmup, feeds=feeds)
    if as_json:
        out.print_json(
            json.dumps({"artifact": str(artifact), "target": model.manifest["target"]["name"], **res.to_json()})
        )
        return
    out.print(
        f"{artifact}: median {res.median_ms:.3f} ms, p90 {res.p90_ms:.3f} ms, min {res.min_ms:.3f} ms "
        f"({res.runs} runs, {res.threads} thread{'s' if res.threads != 1 else ''})",
        highlight=False,
    )
    out.print(memory_line(res), highlight=False)


@app.command("inspect")
@handle_errors
def inspect_cmd(
    path: Annotated[Path, typer.Argument(help="An ONNX model (op coverage) or an artifact directory (its manifest).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quant: Annotated[
        bool, typer.Option("--quant", help="Artifact: per-layer scales and SQNR against float, worst first.")
    ] = False,
    lowrank: Annotated[
        bool,
        typer.Option("--lowrank", help="Artifact: each factorized layer's rank, parameters and error contribution."),
    ] = False,
    hash_attention: Annotated[
        bool,
        typer.Option("--hash", help="Artifact: each attention block, converted to hash attention or why not, energy."),
    ] = False,
    float_ops: Annotated[
        bool,
        typer.Option(
            "--float-ops",
            help="Artifact: every kernel that still does floating-point arithmetic, and its role "
            "(input quantize, output dequantize, or float op).",
        ),
    ] = False,
    kernels: Annotated[
        bool,
        typer.Option("--kernels", help="Artifact: every kernel, the schedule rule that produced it, calls, ops."),
    ] = False,
) -> None:
    """Show op coverage of an ONNX model before compiling (exit 1 if any op is unsupported),
    or summarise an artifact."""
    if path.is_dir():
        if kernels:
            inspect_kernels(path, as_json)
        elif float_ops:
            inspect_float_ops(path, as_json)
        elif lowrank:
            inspect_lowrank(path, as_json)
        elif hash_attention:
            inspect_hash(path, as_json)
        elif quant:
            inspect_quant(path, as_json)
        else:
            inspect_artifact(path, as_json)
        return
    from edgecompile.api import inspect_model

    rows = inspect_model(path)
    bad = [r for r in rows if r.status == "unsupported"]
    if as_json:
        out.print_json(json.dumps([r.to_json() for r in rows]))
    else:
        table = Table(title=f"{path.name}: op coverage")
        for col in ("op", "version", "nodes", "status", "conformance"):
            table.add_column(col)
        colors = {"supported": "green", "partial": "yellow", "untested": "cyan", "failing": "red", "unsupported": "red"}
        for r in rows:
            conf = f"{r.passed}/{r.total} cases" if r.total else "-"
            status = (
                r.status
                if r.status != "unsupported"
                else "unsupported: " + ", ".join(r.nodes[:3]) + (" …" if len(r.nodes) > 3 else "")
            )
            table.add_row(r.op_type, str(r.version or "-"), str(len(r.nodes)), f"[{colors[r.status]}]{status}[/]", conf)
        out.print(table)
        counts = {s: sum(len(r.nodes) for r in rows if r.status == s) for s in colors}
        out.print(", ".join(f"{n} nodes {s}" for s, n in counts.items() if n), highlight=False)
    if bad:
        raise typer.Exit(1)


@app.command("report")
@handle_errors
def report_cmd(
    model: Annotated[Path | None, typer.Argument(help="ONNX model file.")] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option("--eval", help=".npz of inputs (leading sample axis) and, for top1, a 'labels' array."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Report directory (reused rows are kept).")
    ] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Target profile.")] = "native",
    calib: Annotated[str | None, typer.Option("--calib", help="Calibration data for quantizing recipes.")] = None,
    metric: Annotated[str, typer.Option("--metric", help="top1 | cosine | mse | custom:module:function.")] = "top1",
    recipes: Annotated[
        str | None, typer.Option("--recipes", help="Comma-separated recipes [default: the sweep, --sweep].")
    ] = None,
    sweep: Annotated[bool, typer.Option("--sweep", help="The default sweep of 7 recipes.")] = False,
    max_drop: Annotated[
        str | None, typer.Option("--max-drop", help="Largest metric drop to accept: 1 (units) or 1% (top1: points).")
    ] = None,
    latency_budget: Annotated[
        str | None, typer.Option("--latency-budget", help="Latency budget, e.g. 5ms: the most accurate within it.")
    ] = None,
    input_shape: Annotated[
        list[str] | None, typer.Option("--input-shape", help="Fix a dynamic input, NAME=1x128; repeat per input.")
    ] = None,
    lengths: Annotated[
        str | None, typer.Option("--lengths", help="Also time each recipe at these ranged-input lengths: 16,64,256.")
    ] = None,
    runs: Annotated[int, typer.Option("--runs", help="Timed runs per recipe.")] = 30,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads for timing.")] = 1,
    sensitivity: Annotated[
        int | None,
        typer.Option(
            "--sensitivity-samples",
            help="Eval samples for per-layer sensitivity [default: up to 32, as fit in 8 s a recipe; 0: skip].",
        ),
    ] = None,
    rpc: Annotated[
        str | None, typer.Option("--rpc", help="Time on a device of this TVM RPC tracker, HOST:PORT.")
    ] = None,
    key: Annotated[str | None, typer.Option("--key", help="The device's key at the RPC tracker.")] = None,
    compare: Annotated[
        tuple[Path, Path] | None,
        typer.Option("--compare", help="Compare two reports (report.json files or their directories)."),
    ] = None,
) -> None:
    """Compile MODEL with each recipe, measure metric, latency, energy and per-layer sensitivity, and
    recommend one (report.json/md/html); or --compare two reports."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from edgecompile.frontend.spec import parse_assignments, parse_sizes
    from edgecompile.report import render
    from edgecompile.report.sweep import SWEEP, run_report

    if compare is not None:
        from edgecompile.report.compare import compare as diff
        from edgecompile.report.compare import read_report

        a, b = compare
        out.print(diff(read_report(a), read_report(b), (str(a), str(b))), highlight=False, markup=False)
        return
    missing = [n for n, v in (("MODEL", model), ("--eval", eval_data), ("--output", output)) if v is None]
    if missing:
        raise InputMismatchError(f"report needs {', '.join(missing)} (or --compare A B)")
    remote = None
    if rpc is not None or key is not None:
        from edgecompile.report.remote import parse_rpc

        remote = parse_rpc(rpc or "", key)
    chosen = SWEEP if sweep or not recipes else tuple(r.strip() for r in recipes.split(",") if r.strip())
    budget = None
    if latency_budget is not None:
        try:
            budget = float(latency_budget.lower().removesuffix("ms"))
        except ValueError:
            raise InputMismatchError(f"--latency-budget takes milliseconds, e.g. 5ms, got {latency_budget!r}") from None
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("report", total=len(chosen))

        def on_progress(msg: str, done: int, total: int) -> None:
            bar.update(task, description=msg, completed=done, total=total)

        report = run_report(
            model, output, eval_data, target=target, calib=calib, metric=metric, recipes=chosen,
            max_drop=max_drop, latency_budget_ms=budget, input_shapes=parse_assignments(input_shape, "--input-shape"),
            runs=runs, threads=threads, sensitivity_samples=sensitivity, rpc=remote, progress=on_progress,
            lengths=parse_sizes(lengths) if lengths else None,
        )  # fmt: skip
    paths = render.write(report, output)
    out.print(render.markdown(report), highlight=False, markup=False)
    out.print(f"wrote {output / 'report.json'}, {', '.join(str(p) for p in paths)}", highlight=False)


@app.command("package")
@handle_errors
def package_cmd(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory made by `edgecompile compile`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Bundle directory to write.")],
    runtime_only: Annotated[
        bool,
        typer.Option(
            "--runtime-only/--with-compiler",
            help="Only what the device needs: the artifact, TVM's runtime libraries, our runtime (the only kind "
            "of bundle there is; a device never needs the compiler).",
        ),
    ] = True,
    runtime_from: Annotated[
        Path | None,
        typer.Option(
            "--runtime-from",
            help="For an artifact of another CPU architecture: a directory with that architecture's apache-tvm "
            "and apache-tvm-ffi wheels unpacked.",
        ),
    ] = None,
    python: Annotated[
        bool,
        typer.Option("--python", help="Add our Python runtime (run.py) beside the native runner; CUDA needs it."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the file list as JSON.")] = False,
    sign: Annotated[
        Path | None, typer.Option("--sign", help="Sign the bundled manifest with this private key.")
    ] = None,
    trusted_key: TrustedKeyOption = None,
    require_signature: RequireSignatureOption = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a bundle at -o even if it holds other files.")
    ] = False,
) -> None:
    """Write the files a device needs to run ARTIFACT into -o, and list them with their sizes."""
    from edgecompile.artifact.bundle import BundleSecurity, make_bundle
    from edgecompile.artifact.signing import load_private_key
    from edgecompile.errors import ArtifactError

    if not runtime_only:
        raise ArtifactError("bundles hold the runtime only: a device never needs the compiler (drop --with-compiler)")
    security = BundleSecurity(
        trusted_keys(trusted_key, require_signature), load_private_key(sign) if sign else None, force
    )
    bundle = make_bundle(
        artifact, output, runtime_from, python, progress=lambda m: err.print(m, highlight=False), security=security
    )
    if as_json:
        out.print_json(json.dumps(bundle.to_json()))
        return
    how = f"python3 {output}/run.py --input in.npz" if python else f"{output}/run_model {output}/model IN_DIR OUT_DIR"
    table = Table(title=f"{output}/ (run: {how})")
    for col in ("part", "files", "MB"):
        table.add_column(col, justify="right" if col != "part" else "left")
    for role, size in bundle.by_role().items():
        count = sum(1 for f in bundle.files if f.role == role)
        table.add_row(role, str(count), f"{size / 1e6:.2f}")
    out.print(table)
    beyond = bundle.beyond_weights
    tail = "" if beyond is None else f"; {beyond / 1e6:.2f} MB beyond the model's weights"
    out.print(f"total {bundle.total / 1e6:.2f} MB{tail} (file list: {output}/bundle.json)", highlight=False)
    resident = bundle.expected_resident
    if resident is not None and not python:
        plan = bundle.memory or {}
        out.print(
            f"expected resident memory of run_model: at most {resident / 1e6:.1f} MB (weights mapped once, "
            f"activation arena {plan.get('arena_bytes', 0) / 1e6:.2f} MB, code)",
            highlight=False,
        )


@app.command("targets")
@handle_errors
def targets_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the bundled target profiles and what this machine verifies of each (runs / builds)."""
    from edgecompile.targets import list_profiles
    from edgecompile.targets.verify import verification

    profiles = list_profiles()
    if as_json:
        out.print_json(json.dumps([{**p.to_json(), "verified_here": verification(p)} for p in profiles]))
        return
    table = Table(box=None, pad_edge=False)
    for col in ("target", "kind", "verified here", "description"):
        table.add_column(col, overflow="fold")
    for p in profiles:
        table.add_row(p.name, p.tvm.get("kind", ""), verification(p), p.description)
    out.print(table)


register_security_commands(app, handle_errors)


def main() -> None:
    if os.environ.get("EDGECOMPILE_DEBUG"):
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
