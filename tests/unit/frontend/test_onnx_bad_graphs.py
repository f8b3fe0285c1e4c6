"""Malformed or uncompilable ONNX graphs fail with an edgecompile error that names the node, op or
input, before (or instead of) TVM's importer text."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgecompile.errors import EdgeCompileError, InputSpecError, ModelLoadError, UnsupportedOpError
from edgecompile.frontend import import_model
from edgecompile.frontend.onnx_checks import MIN_OPSET, max_opset
from edgecompile.frontend.op_support import coverage

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])


def _model(nodes, inputs=(X,), outputs=None, inits=(), opset=17):
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]
    graph = helper.make_graph(nodes, "g", list(inputs), list(outputs), initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _error(model, shapes=None) -> EdgeCompileError:
    with pytest.raises(EdgeCompileError) as info:
        import_model(model, shapes)
    assert info.value.exit_code == 2
    return info.value


def test_node_reading_its_own_output_is_a_cycle():
    err = _error(_model([helper.make_node("Add", ["x", "y"], ["y"], name="self_add")]))
    assert isinstance(err, ModelLoadError)
    assert "cycle" in str(err) and "node 'self_add' (op Add)" in str(err)


def test_two_nodes_reading_each_other_is_a_cycle():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="first"),
        helper.make_node("Add", ["a", "c"], ["b"], name="n1"),
        helper.make_node("Relu", ["b"], ["c"], name="n2"),
        helper.make_node("Identity", ["c"], ["y"], name="out"),
    ]
    err = _error(_model(nodes))
    assert isinstance(err, ModelLoadError)
    msg = str(err)
    assert "cycle" in msg and "node 'n1' (op Add)" in msg and "node 'n2' (op Relu)" in msg
    assert "'first'" not in msg and "'out'" not in msg  # only the nodes on the cycle


def test_input_nothing_produces_is_named():
    err = _error(_model([helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")]))
    assert isinstance(err, ModelLoadError)
    assert "node 'adder' (op Add) reads 'ghost'" in str(err)


def test_nodes_out_of_order_are_sorted():
    nodes = [
        helper.make_node("Neg", ["a"], ["y"], name="second"),
        helper.make_node("Relu", ["x"], ["a"], name="first"),
    ]
    imported = import_model(_model(nodes))
    assert [s.name for s in imported.inputs] == ["x"]


def test_non_max_suppression_is_an_unsupported_op():
    boxes = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 6, 4])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 6])
    inits = [
        numpy_helper.from_array(np.array([3], np.int64), "max_out"),
        numpy_helper.from_array(np.array([0.5], np.float32), "iou"),
    ]
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou"], ["sel"], name="nms")
    model = _model([node], [boxes, scores], [helper.make_tensor_value_info("sel", TensorProto.INT64, [3, 3])], inits)
    err = _error(model)
    assert isinstance(err, UnsupportedOpError)
    assert err.nodes == [("nms", "NonMaxSuppression")]
    assert "node 'nms' (op NonMaxSuppression)" in str(err) and "depends on the input values" in str(err)
    # inspect agrees
    [cov] = coverage(model)
    assert cov.op_type == "NonMaxSuppression" and cov.status == "unsupported"


def test_nonzero_of_constants_is_folded_not_refused():
    inits = [numpy_helper.from_array(np.array([[0, 1, 0, 2]], np.float32), "c")]
    nodes = [
        helper.make_node("NonZero", ["c"], ["nz"], name="nz"),  # [2, 2]: folded to a constant
        helper.make_node("Cast", ["nz"], ["nzf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["nzf"], ["s"], keepdims=0),
        helper.make_node("Add", ["x", "s"], ["y"]),
    ]
    import_model(_model(nodes, inits=inits))


@pytest.mark.parametrize("opset", [99, max_opset() + 1])
def test_opset_newer_than_the_frontend_knows(opset):
    err = _error(_model([helper.make_node("Relu", ["x"], ["y"])], opset=opset))
    assert isinstance(err, ModelLoadError)
    assert f"opset {opset}, newer than any" in str(err)


@pytest.mark.parametrize("opset", [9, MIN_OPSET - 1, MIN_OPSET, max_opset()])
def test_opset_at_the_bounds_imports(opset):
    import_model(_model([helper.make_node("Relu", ["x"], ["y"])], opset=opset))


def _ids_and_mask_model():
    """Embedding rows of input_ids scaled by attention_mask: both inputs share the length ``s``."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])
    inits = [
        numpy_helper.from_array(np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32), "emb"),
        numpy_helper.from_array(np.array([2], np.int64), "axis"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"], name="embed"),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Unsqueeze", ["m", "axis"], ["mu"], name="unsqueeze"),
        helper.make_node("Mul", ["e", "mu"], ["y"], name="apply_mask"),
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", 8])
    return _model(nodes, [ids, mask], [out], inits)


def test_mask_and_ids_of_different_lengths():
    err = _error(_ids_and_mask_model(), {"input_ids": (1, 8), "attention_mask": (1, 6)})
    assert isinstance(err, InputSpecError)
    msg = str(err)
    assert "node 'apply_mask' (op Mul)" in msg and "'input_ids'" in msg and "'attention_mask'" in msg
    assert "[1, 8, 8]" in msg and "[1, 6, 1]" in msg and "relax" not in msg.lower()


def test_mask_and_ids_of_the_same_length_import():
    imported = import_model(_ids_and_mask_model(), {"input_ids": (1, 6), "attention_mask": (1, 6)})
    assert imported.outputs[0].shape == (1, 6, 8)
