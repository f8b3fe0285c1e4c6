"""ONNX conformance: the ``onnx`` package's node test cases run through our import and build.

Each single-op case (``onnx.backend.test.loader.load_model_tests(kind="node")``, expanded
function bodies excluded) is imported with :func:`onnx_to_relax`, compiled for the host CPU and
run; its outputs are compared with the expected outputs the onnx package computes with its numpy
reference, at the case's own tolerances. Results are keyed by ``(op_type, since_version)``: the
op version the case's opset resolves to.

Two adaptations make the cases test what edgecompile compiles, static graphs:
- inputs whose schema admits only ``tensor(int64)`` (shapes, axes, pads, repeats) are baked into
  the model as initializers, as every exporter writes them;
- each case is also converted with ``onnx.version_converter`` to every older version of its op
  in force at opset 13 or later, so op versions that real exports use (e.g. Reshape-14 at opset
  17) are tested too; a case the converter cannot convert is skipped for that version.

``tools/gen_onnx_support.py`` writes the results to
``onnx_support.json``, which ``inspect`` reads; a test re-runs every case behind a claim.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass
class CaseResult:
    name: str
    op_type: str
    since_version: int
    status: str  # "pass", "mismatch", "error"
    detail: str = ""
    variant: str = ""  # "#0": only the node's first output is kept
    outputs: int = 1

    @property
    def key(self) -> str:
        return f"{self.op_type}@{self.since_version}{self.variant}"


MIN_OPSET = 13


@dataclass
class NodeCase:
    """One conformance case at one op version."""

    name: str
    op_key: tuple[str, int]
    model: object  # onnx.ModelProto with constant operands baked in
    feeds: list  # one list of input arrays per data set (baked inputs removed)
    expected: list  # one list of expected output arrays per data set
    rtol: float
    atol: float
    variant: str = ""

    @property
    def key(self) -> str:
        return f"{self.op_key[0]}@{self.op_key[1]}{self.variant}"


def load_node_cases(ops: set[str] | None = None, older_versions: bool = True) -> list[NodeCase]:
    """The single-op node cases (``ops`` filters by op type), at every op version >= opset 13."""
    import onnx.defs
    from onnx.backend.test.loader import load_model_tests

    out = []
    for case in load_model_tests(kind="node"):
        if case.name.endswith("_expanded") or "_expanded_" in case.name:
            continue
        key = case_op_key(case.model)
        if key is None or (ops is not None and key[0] not in ops):
            continue
        try:  # sequence- and optional-typed cases have no array form: out of scope
            base = _bake_constants(case)
            expected = [[_to_array(o) for o in outs] for _, outs in case.data_sets]
        except (ValueError, TypeError):
            continue
        if base is None:
            continue
        model, feeds = base
        out.append(NodeCase(case.name, key, model, feeds, expected, case.rtol, case.atol))
        if not older_versions:
            continue
        versions = sorted(
            {
                s.since_version
                for s in onnx.defs.get_all_schemas_with_history()
                if s.name == key[0] and s.domain == "" and s.since_version < key[1]
            }
        )
        for v in versions:
            opset = max(v, MIN_OPSET)
            converted = _convert(model, opset)
            if converted is None:
                continue
            ckey = case_op_key(converted)
            if ckey is None or ckey == key or any(c.op_key == ckey and c.name.startswith(case.name + "@") for c in out):
                continue
            out.append(NodeCase(f"{case.name}@opset{opset}", ckey, converted, feeds, expected, case.rtol, case.atol))
    return out + [v for c in out if (v := _first_output_variant(c)) is not None]


def _first_output_variant(case: NodeCase) -> NodeCase | None:
    """For a node with optional extra outputs (LayerNormalization's Mean/InvStdDev, Dropout's
    mask), the same case with only the first output: how models use such ops."""
    import onnx

    if len(case.model.graph.output) < 2:
        return None
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    node = next(n for n in model.graph.node if n.op_type != "Constant")
    first = node.output[0]
    del node.output[1:]
    keep = [o for o in model.graph.output if o.name == first]
    if not keep:
        return None
    del model.graph.output[:]
    model.graph.output.extend(keep)
    expected = [[outs[0]] for outs in case.expected]
    return NodeCase(f"{case.name}[first output]", case.op_key, model, case.feeds, expected, case.rtol, case.atol, "#0")


def _convert(model, opset: int):
    import onnx
    from onnx import version_converter

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = version_converter.convert_version(model, opset)
        onnx.checker.check_model(converted)
    except Exception:
        return None
    return converted


def _bake_constants(case):
    """Move inputs whose schema admits only int64 into initializers; None if the case cannot run."""
    import onnx
    import onnx.defs
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    node = next(n for n in model.graph.node if n.op_type != "Constant")
    opset = next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
    schema = onnx.defs.get_schema(node.op_type, opset, "")
    allowed = {tc.type_param_str: list(tc.allowed_type_strs) for tc in schema.type_constraints}
    const_names = set()
    for i, formal in enumerate(schema.inputs):
        types = allowed.get(formal.type_str, [formal.type_str])
        if types == ["tensor(int64)"]:
            if formal.option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
                const_names.update(n for n in node.input[i:] if n)
            elif i < len(node.input) and node.input[i]:
                const_names.add(node.input[i])
    names = [i.name for i in model.graph.input]
    datasets = [[_to_array(v) for v in ins] for ins, _ in case.data_sets]
    if const_names and len(datasets) > 1:
        first = dict(zip(names, datasets[0]))
        if any(
            not np.array_equal(first[n], dict(zip(names, d))[n])
            for d in datasets[1:]
            for n in const_names
            if n in first
        ):
            return None
    if const_names:
        values = dict(zip(names, datasets[0]))
        keep = [vi for vi in model.graph.input if vi.name not in const_names]
        for n in sorted(const_names & set(values)):
            model.graph.initializer.append(numpy_helper.from_array(values[n], n))
        del model.graph.input[:]
        model.graph.input.extend(keep)
        datasets = [[a for n, a in zip(names, d) if n not in const_names] for d in datasets]
    return model, datasets


def case_op_key(model) -> tuple[str, int] | None:
    """(op_type, since_version) when the case tests one default-domain op type, else None."""
    import onnx.defs

    ops = {(n.domain, n.op_type) for n in model.graph.node if n.op_type != "Constant"}
    if len(ops) != 1:
        return None
    domain, op = ops.pop()
    if domain not in ("", "ai.onnx"):
        return None
    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), None)
    if opset is None:
        return None
    try:
        schema = onnx.defs.get_schema(op, opset, "")
    except Exception:
        return None
    return op, int(schema.since_version)


def _to_array(value) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return np.asarray(value)


def run_case(case: NodeCase, target: dict | None = None) -> CaseResult:
    """Import, build and run one case; compare every data set with the expected outputs."""
    import tvm

    from edgecompile.frontend.onnx_import import onnx_to_relax
    from edgecompile.frontend.spec import TensorSpec
    from edgecompile.ir.host import HostFunction

    op, version = case.op_key

    def result(status: str, detail: str = "") -> CaseResult:
        return CaseResult(case.name, op, version, status, detail, case.variant, len(case.model.graph.output))

    try:
        fn = None
        names = [i.name for i in case.model.graph.input]
        for feeds, expected in zip(case.feeds, case.expected):
            if any(
                f.dtype.kind in "OUSV"
                or f.dtype.name.startswith(("float8", "bfloat", "int4", "uint4", "int2", "uint2", "float4"))
                for f in feeds
            ):
                return result("error", "input dtype not supported by the runtime")
            if fn is None:
                specs = [TensorSpec(n, tuple(f.shape), f.dtype.name) for n, f in zip(names, feeds)]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    mod = onnx_to_relax(case.model, specs, data_dependent_shapes=True)
                    fn = HostFunction(
                        mod, lambda m: tvm.compile(m, target=tvm.target.Target(target or {"kind": "llvm"}))
                    )
            got = fn(*feeds)
            if len(got) != len(expected):
                return result("mismatch", f"{len(got)} outputs, expected {len(expected)}")
            for g, e in zip(got, expected):
                if g.shape != e.shape:
                    return result("mismatch", f"output shape {g.shape}, expected {e.shape}")
                if e.dtype.kind in "fc":
                    ok = np.allclose(g.astype(e.dtype), e, rtol=case.rtol, atol=case.atol, equal_nan=True)
                else:
                    ok = np.array_equal(g.astype(e.dtype), e)
                if not ok:
                    return result("mismatch", "values differ beyond the case's tolerance")
    except Exception as e:  # any failure of import/build/run is a failed case, recorded
        msg = str(e).strip().splitlines()
        return result("error", f"{type(e).__name__}: {msg[-1] if msg else ''}"[:200])
    return result("pass")


_POOL_CASES: list[NodeCase] = []


def _run_index(i: int) -> CaseResult:
    return run_case(_POOL_CASES[i])


def _set_cases(cases: list[NodeCase]) -> None:
    _POOL_CASES[:] = cases


def run_cases(cases: list[NodeCase], jobs: int = 1, progress=None) -> list[CaseResult]:
    """Run ``cases`` on ``jobs`` worker processes; ``progress`` wraps the result iterator (e.g.
    rich's track). Workers are spawned, not forked: a fork of a process whose thread pools (TVM's,
    OpenMP's, ONNX Runtime's) already ran inherits them without their threads, and a parallel
    kernel in the child can spin forever waiting for them (seen after a test that ran models)."""
    import multiprocessing as mp

    if jobs <= 1:
        it = (run_case(c) for c in cases)
        return list(progress(it, len(cases)) if progress else it)
    with mp.get_context("spawn").Pool(jobs, initializer=_set_cases, initargs=(cases,)) as pool:
        it = pool.imap(_run_index, range(len(cases)), chunksize=4)
        return list(progress(it, len(cases)) if progress else it)


def summarize(results: list[CaseResult]) -> dict[str, dict]:
    """``{"Op@version": {"passed", "total", "failing": [...]}}`` sorted by key. ``Op@version#0``
    entries (ops with optional extra outputs) gather the first-output variants and the cases that
    have one output anyway: the evidence for nodes that use only their first output."""
    with_variants = {f"{r.op_type}@{r.since_version}" for r in results if r.variant}
    ops: dict[str, dict] = {}
    for r in results:
        keys = [r.key]
        if not r.variant and r.outputs == 1 and r.key in with_variants:
            keys.append(r.key + "#0")
        for key in keys:
            e = ops.setdefault(key, {"passed": 0, "total": 0, "failing": []})
            e["total"] += 1
            if r.status == "pass":
                e["passed"] += 1
            else:
                e["failing"].append(f"{r.name}: {r.status}: {r.detail}")
    return {k: ops[k] for k in sorted(ops)}
