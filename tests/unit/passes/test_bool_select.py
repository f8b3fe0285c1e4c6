"""``where`` with a boolean condition as one select (passes/bool_select.py): the values equal
numpy's ``where`` exactly (NaNs guarded, broadcasting, scalar constants on either side), the pass
leaves no ``relax.where`` behind, and torch's softmax guard still zeroes a row that is NaN."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from edgecompile.lower.build import compile_module
from edgecompile.passes.bool_select import WhereAsSelect
from edgecompile.targets import get_profile

op = relax.op


def _run(params: dict, body, feeds: dict) -> tuple[np.ndarray, relax.Function]:
    bb = relax.BlockBuilder()
    vs = [relax.Var(n, relax.TensorType(s, d)) for n, (s, d) in params.items()]
    with bb.function("main", vs):
        with bb.dataflow():
            y = bb.emit_output(body(*vs))
        bb.emit_func_output(y)
    mod = bb.get()
    vm = relax.VirtualMachine(compile_module(mod, get_profile("native").resolved()), tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(feeds[n]) for n in params)).numpy()
    return out, mod


def _ops(mod) -> set[str]:
    names: set[str] = set()
    relax.analysis.post_order_visit(
        mod["main"], lambda e: names.add(e.op.name) if isinstance(e, relax.Call) and hasattr(e.op, "name") else None
    )
    return names


CASES = {
    "scalar zero where the value is NaN": ((2, 3, 8, 33), (2, 3, 8, 33), "scalar-a"),
    "mask broadcast over heads and rows, scalar -inf": ((1, 1, 1, 40), (1, 4, 40, 40), "scalar-b"),
    "two broadcast tensors": ((3, 1, 17), (3, 5, 17), "tensors"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_where_as_select_equals_numpy(case):
    cshape, xshape, kind = CASES[case]
    rng = np.random.default_rng(5)
    x = rng.standard_normal(xshape).astype(np.float32)
    x[(0,) * (len(xshape) - 1) + (slice(0, 7),)] = np.nan
    c = rng.random(cshape) < 0.4
    y = rng.standard_normal(xshape[-1:]).astype(np.float32)
    params = {"c": (cshape, "bool"), "x": (xshape, "float32"), "y": (xshape[-1:], "float32")}
    if kind == "scalar-a":
        c = np.isnan(x)

        def body(cv, xv, yv):
            return op.where(op.isnan(xv), relax.const(0.0, "float32"), xv)

        ref = np.where(np.isnan(x), np.float32(0), x)
    elif kind == "scalar-b":

        def body(cv, xv, yv):
            return op.where(cv, xv, relax.const(-np.inf, "float32"))

        ref = np.where(c, x, np.float32(-np.inf))
    else:

        def body(cv, xv, yv):
            return op.where(cv, xv, yv)

        ref = np.where(c, x, y)
    got, mod = _run(params, body, {"c": c, "x": x, "y": y})
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)  # NaN == NaN position by position here
    assert "relax.where" in _ops(mod) and "relax.where" not in _ops(WhereAsSelect()(mod))


def test_softmax_guard_zeroes_nan_rows_and_keeps_the_rest():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 2, 6, 24)).astype(np.float32)
    x[0, 1, 3, 5] = np.nan  # that row's softmax is NaN: the guard makes it 0

    def body(xv):
        p = op.nn.softmax(xv, axis=-1)
        return op.where(op.isnan(p), relax.const(0.0, "float32"), p)

    got, _ = _run({"x": (x.shape, "float32")}, body, {"x": x})
    e = np.exp(x - x.max(-1, keepdims=True))
    ref = np.nan_to_num(e / e.sum(-1, keepdims=True), nan=0.0)
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got[0, 1, 3], 0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
