"""Specialize an ONNX graph to static input shapes before import.

Exporters with dynamic axes (TorchScript's ``dynamic_axes``, dynamo's ``dynamic_shapes``) write
shape arithmetic — ``Shape → Gather → Unsqueeze → Concat → Reshape`` — that TVM's ONNX frontend
cannot always follow (it fails on a ``Gather`` over a ``Shape``). Since edgecompile compiles for
static shapes, we pin the input dimensions, infer shapes, and fold every small computation whose
inputs are all known (``Shape`` of a statically shaped tensor, then ops over constants) into an
initializer, and again on the result until nothing more folds. Only outputs up to
:data:`MAX_FOLD_ELEMENTS` elements are folded, so weights are never duplicated; the fold uses
onnx's reference evaluator, so its semantics are the standard's.
"""

from __future__ import annotations

import logging

import numpy as np

from edgecompile.frontend.spec import TensorSpec

log = logging.getLogger(__name__)

MAX_FOLD_ELEMENTS = 4096
# Inference and folding repeat until nothing more folds (a shape folded into a Reshape lets
# inference see through it to the next Shape: Paddle2ONNX's PP-OCR needs two rounds), at most this often.
MAX_ROUNDS = 8
# Ops we never fold: random, or with subgraphs.
_NO_FOLD = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "If",
    "Loop",
    "Scan",
    "SequenceConstruct",
}


def specialize(model, specs: list[TensorSpec]):
    """A copy of ``model`` with static input dims and its shape arithmetic folded to constants."""
    import onnx
    from onnx import shape_inference

    m = onnx.ModelProto()
    m.CopyFrom(model)
    _pin_inputs(m, specs)
    for _ in range(MAX_ROUNDS):
        try:
            m = shape_inference.infer_shapes(m, data_prop=True)
        except Exception as e:  # inference is best effort; the importer infers too
            log.info("onnx shape inference failed (%s); folding only constants", e)
        keep, new_inits = _fold(m, static_shapes(m))
        if not new_inits:
            return m
        del m.graph.node[:]
        m.graph.node.extend(keep)
        m.graph.initializer.extend(new_inits)
        _drop_unused_initializers(m)
    return m


def _pin_inputs(m, specs: list[TensorSpec]) -> None:
    """Set the dims of ``m``'s graph inputs named in ``specs`` to the spec's static sizes."""
    by_name = {s.name: s for s in specs}
    for vi in m.graph.input:
        spec = by_name.get(vi.name)
        if spec is None:
            continue
        dims = vi.type.tensor_type.shape.dim
        for d, size in zip(dims, spec.shape):
            d.Clear()
            d.dim_value = int(size)


def _fold(m, shapes: dict[str, tuple[int, ...]]) -> tuple[list, list]:
    """``(nodes kept, initializers for the folded outputs)``: nodes are folded in graph order, each
    over the initializers and the outputs folded before it."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in m.graph.initializer}
    consts: dict[str, np.ndarray] = {name: None for name in initializers}  # known, loaded on first use

    def value(name):
        if consts[name] is None:
            consts[name] = numpy_helper.to_array(initializers[name])
        return consts[name]

    keep, new_inits = [], []
    for node in m.graph.node:
        folded = _fold_node(node, m, shapes, consts, value)
        if folded is not None and all(v is not None and v.size <= MAX_FOLD_ELEMENTS for v in folded):
            for name, v in zip(node.output, folded):
                consts[name] = v
                new_inits.append(numpy_helper.from_array(np.asarray(v), name))
        else:
            keep.append(node)
    return keep, new_inits


def _fold_node(node, m, shapes, consts, value) -> list[np.ndarray] | None:
    """The output values of ``node`` if it can be folded (a ``Constant``, a ``Shape`` of a static
    tensor, a standard op over small known values), else None."""
    if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
        return _eval(node, [], m)
    if node.op_type == "Shape" and node.input[0] in shapes:
        return [_shape_value(node, shapes[node.input[0]])]
    if (
        node.domain in ("", "ai.onnx")
        and node.op_type not in _NO_FOLD
        and node.input
        and all(i == "" or i in consts for i in node.input)
        and all(i == "" or _small(i, consts, shapes, m) for i in node.input)
    ):
        return _eval(node, [value(i) if i else None for i in node.input], m)
    return None


def _small(name, consts, shapes, m) -> bool:
    v = consts.get(name)
    if v is not None:
        return v.size <= MAX_FOLD_ELEMENTS
    shape = shapes.get(name)
    return shape is not None and int(np.prod(shape)) <= MAX_FOLD_ELEMENTS


def static_shapes(m) -> dict[str, tuple[int, ...]]:
    """The static shape of every tensor whose shape is known (inputs, inferred values, outputs, initializers)."""
    out = {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(int(d.dim_value) for d in dims)
    for t in m.graph.initializer:
        out[t.name] = tuple(t.dims)
    return out


def _shape_value(node, shape: tuple[int, ...]) -> np.ndarray:
    attrs = {a.name: a.i for a in node.attribute}
    rank = len(shape)
    start, end = attrs.get("start", 0), attrs.get("end", rank)
    start, end = (s + rank if s < 0 else s for s in (start, end))
    return np.array(shape[max(0, start) : min(rank, end)], dtype=np.int64)


def _eval(node, inputs: list, m) -> list[np.ndarray] | None:
    """Evaluate one node with onnx's reference implementation; None if it cannot."""
    from onnx.reference import ReferenceEvaluator

    try:
        opset = [o for o in m.opset_import if o.domain in ("", "ai.onnx")]
        import onnx
        from onnx import helper

        names = [f"in{i}" if n else "" for i, n in enumerate(node.input)]
        n2 = helper.make_node(node.op_type, names, [f"out{i}" for i in range(len(node.output))], domain=node.domain)
        n2.attribute.extend(node.attribute)
        graph = helper.make_graph(
            [n2],
            "fold",
            [
                helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), None)
                for n, v in zip(names, inputs)
                if n
            ],
            [
                helper.make_tensor_value_info(f"out{i}", onnx.TensorProto.UNDEFINED, None)
                for i in range(len(node.output))
            ],
        )
        model = helper.make_model(graph, opset_imports=opset, ir_version=m.ir_version)
        feeds = {n: np.asarray(v) for n, v in zip(names, inputs) if n}
        return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]
    except Exception as e:
        log.debug("cannot fold %s (%s): %s", node.name, node.op_type, e)
        return None


def _drop_unused_initializers(m) -> None:
    used = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
    keep = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    inits = {t.name for t in keep}
    graph_inputs = [vi for vi in m.graph.input if vi.name in used or vi.name not in inits]
    del m.graph.input[:]
    m.graph.input.extend(graph_inputs)
