"""ONNX import: read a model file (external data included), resolve static input specs, and
convert the graph to a Relax IRModule with TVM's ONNX frontend.

Decisions:
- Shapes are static at compile time. A symbolic dimension (``batch``, ``seq``) must be given with
  ``--input-shape NAME=1x128``; a fixed dimension that disagrees with the given shape is an error.
- Weights are embedded in the compiled library as constants, so an artifact is one library file
  plus its manifest.
- Unsupported operators are found before conversion and reported with node names; so are ops
  whose output shape depends on input values, a graph with a cycle or an input nothing produces,
  and (when the importer fails) operands whose shapes the given input shapes make disagree
  (:mod:`edgecompile.frontend.onnx_checks`).
- Every gather is bounded inside the compiled model
  (:class:`edgecompile.passes.bounded_gather.BoundGathers`): an out-of-range index reads the
  nearest row, never past the table.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import numpy as np

from edgecompile.errors import (
    BuildError,
    InputSpecError,
    ModelLoadError,
    UnsupportedOpError,
)
from edgecompile.frontend.onnx_checks import (
    DEFAULT_DOMAINS,
    broadcast_conflict,
    check_static_outputs,
    topological_nodes,
)
from edgecompile.frontend.spec import TensorSpec

log = logging.getLogger(__name__)


def read_onnx(path: str | Path):
    """Load an ONNX model with its external data, raising :class:`ModelLoadError` on bad input."""
    import onnx
    from onnx import external_data_helper

    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"model file not found: {p}")
    if p.is_dir():
        raise ModelLoadError(f"expected an ONNX file, got a directory: {p}")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-wrapped errors, ...
        raise ModelLoadError(f"not an ONNX file or corrupt protobuf: {p} ({type(e).__name__})") from e
    if model.ir_version == 0 or not model.graph.output:
        raise ModelLoadError(f"not an ONNX model (no IR version or no graph outputs): {p}")
    if _uses_external_data(model):
        _check_external_files(model, p.parent)
        try:
            external_data_helper.load_external_data_for_model(model, str(p.parent))
        except Exception as e:
            raise ModelLoadError(f"cannot read the external data of {p}: {e}") from e
    return model


def _uses_external_data(model) -> bool:
    from onnx import TensorProto

    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def _check_external_files(model, base: Path) -> None:
    from onnx import TensorProto

    for t in model.graph.initializer:
        if t.data_location != TensorProto.EXTERNAL:
            continue
        loc = {e.key: e.value for e in t.external_data}.get("location", "")
        if not (base / loc).is_file():
            raise ModelLoadError(
                f"external data file '{loc}' for tensor '{t.name}' not found next to the model "
                f"in {base}; keep the .onnx and its data file in the same directory"
            )


def model_opset(model) -> int:
    """The default-domain opset the model imports."""
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            return int(imp.version)
    raise ModelLoadError("the model imports no default-domain ONNX opset")


def graph_inputs(model) -> list[tuple[str, list[int | str], str]]:
    """The model's real inputs (initializers excluded): name, dims (int or symbol), dtype."""
    from onnx import helper

    inits = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise InputSpecError(f"input '{vi.name}' is not a tensor; only tensor inputs are supported")
        dims: list[int | str] = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or f"?{i}")
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        out.append((vi.name, dims, dtype))
    return out


def resolve_input_specs(
    model, shapes: dict[str, tuple[int, ...]] | None = None, dtypes: dict[str, str] | None = None
) -> list[TensorSpec]:
    """Static input specs from the model, with user overrides; symbolic dims must be overridden."""
    shapes = dict(shapes or {})
    dtypes = dict(dtypes or {})
    inputs = graph_inputs(model)
    names = [n for n, _, _ in inputs]
    for given in list(shapes) + list(dtypes):
        if given not in names:
            raise InputSpecError(f"the model has no input named '{given}'; its inputs are: {', '.join(names)}")
    ranges = index_ranges(model)
    specs = []
    for name, dims, dtype in inputs:
        shown = "x".join(str(d) for d in dims)
        if name in shapes:
            shape = tuple(shapes[name])
            if len(shape) != len(dims):
                raise InputSpecError(
                    f"input '{name}' has rank {len(dims)} ({shown}) but --input-shape gives rank {len(shape)}"
                )
            for axis, (d, s) in enumerate(zip(dims, shape)):
                if isinstance(d, int) and d != s:
                    raise InputSpecError(
                        f"input '{name}' has fixed size {d} at axis {axis} ({shown}), --input-shape says {s}"
                    )
        else:
            symbolic = [d for d in dims if not isinstance(d, int)]
            if symbolic:
                example = "x".join(
                    str(d) if isinstance(d, int) else ("1" if i == 0 else "128") for i, d in enumerate(dims)
                )
                raise InputSpecError(
                    f"input '{name}' has symbolic dimension '{symbolic[0]}' (shape {shown}); give a "
                    f"static shape, e.g. --input-shape {name}={example}"
                )
            shape = tuple(int(d) for d in dims)
        specs.append(TensorSpec(name, shape, dtypes.get(name, dtype), ranges.get(name)))
    return specs


def index_ranges(model) -> dict[str, tuple[int, int]]:
    """Inputs used as ``Gather`` indices into an initializer (directly or through ``Cast``): the
    inclusive range ONNX allows, ``[-rows, rows - 1]``, intersected over every such use."""
    inputs = {vi.name for vi in model.graph.input}
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    alias = {}  # Cast output -> graph input
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input and node.input[0] in inputs:
            alias[node.output[0]] = node.input[0]
    ranges: dict[str, tuple[int, int]] = {}
    for node in model.graph.node:
        if node.op_type != "Gather" or node.domain not in DEFAULT_DOMAINS or len(node.input) < 2:
            continue
        src = alias.get(node.input[1], node.input[1])
        data = inits.get(node.input[0])
        if src not in inputs or src in inits or data is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        rows = data[axis] if -len(data) <= axis < len(data) else None
        if not rows:
            continue
        lo, hi = ranges.get(src, (-rows, rows - 1))
        ranges[src] = (max(lo, -rows), min(hi, rows - 1))
    return ranges


def importable_ops() -> set[str]:
    """The default-domain op types TVM's ONNX frontend converts."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    return set(_get_convert_map()) | {"Constant", "If"}


def unsupported_nodes(model) -> list[tuple[str, str]]:
    """(node name, op type) of every node TVM's ONNX frontend has no converter for."""
    known = importable_ops()
    out = []
    for i, node in enumerate(model.graph.node):
        domain_ok = node.domain in DEFAULT_DOMAINS
        if not domain_ok or node.op_type not in known:
            op = node.op_type if domain_ok else f"{node.domain}::{node.op_type}"
            out.append((node.name or f"#{i}", op))
    return out


def onnx_to_relax(model, specs: list[TensorSpec], data_dependent_shapes: bool = False):
    """Convert an ONNX model to a Relax IRModule whose ``main`` takes ``specs`` in order, its
    gathers bounded. ``data_dependent_shapes`` lets ops like ``NonZero`` through (the conformance
    run builds them with plain TVM; a compile needs static output shapes)."""
    from tvm.relax.frontend.onnx import from_onnx

    from edgecompile.frontend.onnx_static import specialize, static_shapes
    from edgecompile.passes.bounded_gather import BoundGathers

    model = _in_order(model)
    bad = unsupported_nodes(model)
    if bad:
        raise UnsupportedOpError(bad, model_opset(model))
    model = specialize(model, specs)
    if not data_dependent_shapes:
        check_static_outputs(model, model_opset(model))
    try:
        mod = from_onnx(
            model,
            shape_dict={s.name: list(s.shape) for s in specs},
            dtype_dict={s.name: s.dtype for s in specs},
            opset=model_opset(model),
            keep_params_in_input=False,
        )
    except Exception as e:
        failure = e
    else:
        return BoundGathers()(mod)
    clear = broadcast_conflict(model, static_shapes(model), {s.name for s in specs})
    if clear is not None:
        # not chained: the importer's frames (and its half-built BlockBuilder, which complains on
        # stderr when destroyed) go now, while the caller still captures TVM's output
        failure = None
        gc.collect()
        raise clear
    raise BuildError(f"the ONNX importer failed: {type(failure).__name__}: {_first_line(failure)}") from failure


def _in_order(model):
    """``model`` with its nodes in topological order (a copy if they were not); a cycle or an input
    nothing produces is a :class:`ModelLoadError`."""
    import onnx

    order = topological_nodes(model.graph)
    if order is None:
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    nodes = [m.graph.node[i] for i in order]
    copies = []
    for n in nodes:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        copies.append(c)
    del m.graph.node[:]
    m.graph.node.extend(copies)
    return m


def output_names(model) -> list[str]:
    return [o.name for o in model.graph.output]


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else ""
