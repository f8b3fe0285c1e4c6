"""Checks of an ONNX graph before TVM sees it, so that bad models fail with a message that names
the node, op or input instead of the importer's traceback text.

- :func:`check_opset`: the default-domain opset must be one this frontend supports: 13 (the
  README's floor) up to the newest the installed ``onnx`` package defines (shape inference and
  constant folding use its schemas; TVM's converters pick the newest version at or below it).
  :func:`upgraded_opset` first converts an older model to opset 13 with onnx's version converter
  (decision: real exports still ship at opsets 11-12, e.g. Paddle2ONNX's PP-OCR models, and the
  converter's rewrites from 11 and 12 to 13 are mechanical: ``Squeeze``/``Unsqueeze``/``ReduceSum``
  axes become inputs, ``Split`` sizes too); where it cannot, the model is refused with the fix.
- :func:`topological_nodes`: every node input is produced by a graph input, an initializer or an
  earlier node; a cycle (a node reading its own output, two nodes reading each other's) or an
  input nothing produces is a :class:`~edgecompile.errors.ModelLoadError`. A graph that is merely
  out of order is put in order.
- :func:`check_static_outputs`: ops whose output shape depends on input values
  (``NonMaxSuppression``, ``NonZero``, ...) cannot be compiled for static shapes.
- :func:`broadcast_conflict`: after an import failure, the first elementwise node whose operand
  shapes do not broadcast, with the graph inputs each operand comes from (an ``input_ids`` and an
  ``attention_mask`` given different lengths).
"""

from __future__ import annotations

import heapq
from collections import defaultdict

import numpy as np

from edgecompile.errors import InputSpecError, ModelLoadError, UnsupportedOpError

MIN_OPSET = 13
DEFAULT_DOMAINS = ("", "ai.onnx")

# Ops whose output shape depends on the values of their inputs: no static shape to compile for.
DATA_DEPENDENT_OPS = frozenset({"NonMaxSuppression", "NonZero", "Unique", "Compress"})

# Ops with numpy (multidirectional) broadcasting of all their inputs.
BROADCAST_OPS = frozenset(
    {
        "Add", "Sub", "Mul", "Div", "Pow", "Mod", "BitShift", "Max", "Min", "Sum", "Mean",
        "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor",
        "BitwiseAnd", "BitwiseOr", "BitwiseXor", "Where",
    }
)  # fmt: skip


def max_opset() -> int:
    """The newest default-domain opset the installed onnx package defines."""
    import onnx.defs

    return int(onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> None:
    """Refuse an opset outside ``[MIN_OPSET, max_opset()]``, saying what to do."""
    import onnx

    newest = max_opset()
    if opset > newest:
        raise ModelLoadError(
            f"the model uses ONNX opset {opset}, newer than any this frontend knows (the installed onnx "
            f"{onnx.__version__} defines opsets up to {newest}); re-export it with an opset from "
            f"{MIN_OPSET} to {newest} (e.g. torch.onnx.export(..., opset_version=17))"
        )
    if opset < MIN_OPSET:
        raise ModelLoadError(
            f"the model uses ONNX opset {opset}, and onnx's version converter could not bring it to "
            f"opset {MIN_OPSET}, the oldest edgecompile supports: re-export it with opset {MIN_OPSET} or newer"
        )


def upgraded_opset(model, opset: int):
    """``model`` converted to opset :data:`MIN_OPSET` by ``onnx.version_converter`` where its
    default-domain ``opset`` is older; as it is otherwise, or where the converter fails (then
    :func:`check_opset` refuses it)."""
    from onnx import version_converter

    if opset >= MIN_OPSET:
        return model
    try:
        return version_converter.convert_version(model, MIN_OPSET)
    except (RuntimeError, ValueError, version_converter.ConvertError):
        return model


def _node_label(node, i: int) -> str:
    return f"node '{node.name or f'#{i}'}' (op {node.op_type})"


def _subgraph_reads(node) -> set[str]:
    """Names a node's subgraphs (``If``/``Loop`` bodies) read from the enclosing scope."""
    reads: set[str] = set()
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for g in graphs:
            local = {t.name for t in g.initializer} | {v.name for v in g.input}
            for n in g.node:
                local.update(n.output)
            for n in g.node:
                reads.update(i for i in n.input if i and i not in local)
                reads.update(r for r in _subgraph_reads(n) if r not in local)
    return reads


def _dependencies(graph) -> list[set[int]]:
    """For each node, the indices of the nodes whose outputs it reads; raises for unknown names."""
    producer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for o in node.output:
            if o:
                producer[o] = i
    given = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    given |= {t.values.name for t in graph.sparse_initializer}
    deps: list[set[int]] = []
    for i, node in enumerate(graph.node):
        mine = set()
        for name in node.input:
            if not name:
                continue
            if name in producer:
                mine.add(producer[name])
            elif name not in given:
                raise ModelLoadError(
                    f"{_node_label(node, i)} reads '{name}', which no node, graph input or initializer produces"
                )
        mine.update(producer[r] for r in _subgraph_reads(node) if r in producer)
        deps.append(mine)
    return deps


def topological_nodes(graph) -> list[int] | None:
    """The node indices in an order where every node comes after what it reads; None if the graph
    is already in order. A cycle is a :class:`ModelLoadError` naming its nodes."""
    deps = _dependencies(graph)
    users: dict[int, list[int]] = defaultdict(list)
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]  # a heap: the earliest ready node first
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) < len(deps):
        cycle = _one_cycle(deps, set(range(len(deps))) - set(order))
        shown = " -> ".join(_node_label(graph.node[i], i) for i in cycle + cycle[:1])
        raise ModelLoadError(
            f"the ONNX graph has a cycle: {shown}; a node cannot read its own output, directly or "
            "through other nodes (ONNX graphs are acyclic)"
        )
    return None if order == sorted(order) else order


def _one_cycle(deps: list[set[int]], stuck: set[int]) -> list[int]:
    """One cycle among ``stuck`` nodes (each reads another stuck node), in reading order."""
    i = min(stuck)
    path: list[int] = []
    seen: dict[int, int] = {}
    while i not in seen:
        seen[i] = len(path)
        path.append(i)
        i = min(d for d in deps[i] if d in stuck)
    return list(reversed(path[seen[i] :]))


def check_static_outputs(model, opset: int | None = None) -> None:
    """Refuse nodes (left after constant folding) whose output shape depends on input values."""
    bad = [
        (node.name or f"#{i}", node.op_type)
        for i, node in enumerate(model.graph.node)
        if node.domain in DEFAULT_DOMAINS and node.op_type in DATA_DEPENDENT_OPS
    ]
    if bad:
        raise DataDependentShapeError(bad, opset)


class DataDependentShapeError(UnsupportedOpError):
    """An op whose output shape depends on input values: edgecompile compiles static shapes."""

    def __init__(self, nodes: list[tuple[str, str]], opset: int | None = None):
        super().__init__(nodes, opset)
        shown = ", ".join(f"node '{name}' (op {op})" for name, op in nodes[:5])
        at = f" at opset {opset}" if opset is not None else ""
        Exception.__init__(
            self,
            f"unsupported operator{'s' if len(nodes) > 1 else ''}{at}: {shown}: the size of "
            f"{'their' if len(nodes) > 1 else 'its'} output depends on the input values, and edgecompile "
            "compiles static shapes only; run it outside the compiled model (e.g. as post-processing) "
            "or re-export the model without it",
        )


def _sources(graph, inputs: set[str]) -> dict[str, set[str]]:
    """For each tensor name, the graph inputs it is computed from."""
    out: dict[str, set[str]] = {name: {name} for name in inputs}
    for node in graph.node:
        came = set().union(*(out.get(i, set()) for i in node.input if i)) if node.input else set()
        for o in node.output:
            out[o] = came
    return out


def broadcast_conflict(model, shapes: dict[str, tuple[int, ...]], user_inputs: set[str]) -> Exception | None:
    """The error for the first broadcasting node whose operands' static shapes do not broadcast, or
    None. ``shapes``: static shapes after inference; ``user_inputs``: the graph inputs."""
    sources = None
    for i, node in enumerate(model.graph.node):
        if node.domain not in DEFAULT_DOMAINS or node.op_type not in BROADCAST_OPS:
            continue
        operands = [n for n in node.input if n]
        if len(operands) < 2 or not all(n in shapes for n in operands):
            continue
        try:
            np.broadcast_shapes(*(shapes[n] for n in operands))
            continue
        except ValueError:
            pass
        sources = sources or _sources(model.graph, user_inputs)
        parts = []
        for n in operands:
            came = sorted(sources.get(n, set()))
            parts.append(f"{list(shapes[n])} (from {', '.join(repr(c) for c in came) or 'constants'})")
        where = f"{_node_label(node, i)} cannot broadcast its operands: {' and '.join(parts)}"
        tied = sorted(set().union(*(sources.get(n, set()) for n in operands)))
        if len(tied) >= 2:
            return InputSpecError(
                f"{where}; the graph ties the sizes of inputs {', '.join(repr(t) for t in tied)}: give them "
                "matching --input-shape sizes (e.g. the same sequence length)"
            )
        return ModelLoadError(f"the model is inconsistent for these input shapes: {where}")
    return None
