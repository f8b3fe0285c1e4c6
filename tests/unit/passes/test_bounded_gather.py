"""Bounded gathers: a compiled model never reads past an embedding table, whatever ids a caller
passes straight to the library (bypassing the runtime's valid_range check)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_close, ort_run

import edgecompile
from edgecompile.passes.bounded_gather import BoundGathers, bound_constant

V, D, S = 512, 16, 8  # V * D >= ir.layers.EMBEDDING_MIN: the int8 recipe quantizes the table


def _gather_model(path):
    """ids[1, S] -> Gather(emb[V, D]) -> MatMul(W[D, 4]): an embedding and a linear layer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    emb = numpy_helper.from_array(rng.standard_normal((V, D)).astype(np.float32), "emb")
    w = numpy_helper.from_array(rng.standard_normal((D, 4)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["rows"], name="embed"),
        helper.make_node("MatMul", ["rows", "w"], ["y"], name="proj"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, S])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, S, 4])],
        [emb, w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return numpy_helper.to_array(emb), numpy_helper.to_array(w)


def _clamped(ids: np.ndarray) -> np.ndarray:
    """The rows a bounded gather reads: negatives count from the end once, then clamp."""
    return np.clip(np.where(ids < 0, ids + V, ids), 0, V - 1)


def _vm_run(artifact, ids: np.ndarray) -> np.ndarray:
    """The compiled library called directly (its weights after the ids): no runtime range check."""
    import tvm

    from edgecompile.runtime.weights import map_weights

    lib = tvm.runtime.load_module(str(artifact / "model.so"))
    vm = tvm.runtime.vm.VirtualMachine(lib, tvm.cpu())
    section = json.loads((artifact / "manifest.json").read_text()).get("weights")
    weights = [tvm.runtime.tensor(np.ascontiguousarray(v)) for v in map_weights(artifact, section)] if section else []
    return vm["main"](tvm.runtime.tensor(ids, tvm.cpu()), *weights).numpy()


HOSTILE = [
    np.full((1, S), V + 5000, np.int64),
    np.full((1, S), 10**12, np.int64),
    np.full((1, S), -V - 7, np.int64),
    np.array([[0, V - 1, -1, -V, V, -V - 1, 2**62, -(2**62)]], np.int64),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gather")
    path = tmp / "gather.onnx"
    emb, w = _gather_model(path)
    return path, emb, w, tmp


@pytest.mark.parametrize("recipe", ["fp32", "int8"])
def test_out_of_range_ids_read_the_clamped_rows(model, recipe):
    path, emb, w, tmp = model
    rng = np.random.default_rng(0)
    calib = [{"ids": rng.integers(-V, V, (1, S))} for _ in range(4)] if recipe == "int8" else None
    art = edgecompile.compile(path, output=tmp / recipe, recipe=recipe, calib=calib)
    for ids in HOSTILE:
        got = _vm_run(art, ids)
        assert np.isfinite(got).all()
        # the same as the in-range ids it clamps to, through the same compiled model
        assert np.array_equal(got, _vm_run(art, _clamped(ids))), ids
        if recipe == "fp32":
            assert_close(emb[_clamped(ids)] @ w, got)


def test_in_range_ids_match_onnxruntime(model):
    path, _emb, _w, tmp = model
    art = edgecompile.compile(path, output=tmp / "ref")
    rng = np.random.default_rng(1)
    for ids in (rng.integers(0, V, (1, S)), rng.integers(-V, V, (1, S)), np.array([[0, V - 1, -1, -V] * 2])):
        ids = ids.astype(np.int64)
        ref = ort_run(path, {"ids": ids})["y"]
        assert_close(ref, edgecompile.load(art).run({"ids": ids})["y"])
        assert_close(ref, _vm_run(art, ids))


def test_torch_embedding_is_bounded(tmp_path):
    torch = pytest.importorskip("torch")

    class Embed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.e = torch.nn.Embedding(50, 8)

        def forward(self, ids):
            return self.e(ids)

    module = Embed().eval()
    art = edgecompile.compile(
        module, output=tmp_path / "t", input_shapes={"ids": (1, 4)}, input_dtypes={"ids": "int64"}
    )
    table = module.e.weight.detach().numpy()
    ids = np.array([[3, 10**12, 50 + 9, -3]], np.int64)
    # TVM's torch importer casts ids to int32 before the gather: 10**12 wraps (to a negative
    # number) first, then is bounded like any other id; every read stays inside the table
    narrow = ids.astype(np.int32)
    rows = np.clip(np.where(narrow < 0, narrow + 50, narrow), 0, 49)
    got = _vm_run(art, ids)
    assert np.array_equal(got[0], table[rows[0]])


def test_pass_leaves_safe_takes_and_bounds_constants():
    import tvm
    from tvm import relax

    x = relax.Var("x", relax.TensorType([5, 3], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.take(x, relax.const(np.array([0, 4], np.int64)), axis=0))
            b = bb.emit(relax.op.take(x, relax.const(np.array([-1, 9], np.int64)), axis=0))
            c = bb.emit(relax.op.take(x, relax.const(np.array([7], np.int64)), axis=0, mode="wrap"))
            out = bb.emit_output(relax.Tuple([a, b, c]))
        bb.emit_func_output(out)
    mod = BoundGathers()(bb.get())
    takes = [
        bnd.value
        for block in mod["main"].body.blocks
        for bnd in block.bindings
        if isinstance(bnd.value, relax.Call) and getattr(bnd.value.op, "name", "") == "relax.take"
    ]
    consts = [t.args[1].value.numpy().tolist() for t in takes]
    assert consts == [[0, 4], [4, 4], [7]]  # in range: unchanged; -1 -> 4, 9 -> 4; wrap mode: left alone
    assert str(takes[2].attrs.mode) == "wrap"
    assert isinstance(mod, tvm.IRModule)


def test_bound_constant():
    assert bound_constant(np.array([-8, -3, 0, 2, 3, 99], np.int32), 3).tolist() == [0, 0, 0, 2, 2, 2]
    assert bound_constant(np.array([0, 7], np.uint8), 3).tolist() == [0, 2]
