"""Bound every gather: ``relax.take`` with integer indices reads only rows of its table.

TVM's ``take`` (mode ``fast``, what every importer emits) does not check its indices: an id past
the table reads past it, and a huge one segfaults. The runtime refuses inputs outside the
manifest's ``valid_range``, but a resealed manifest with a widened range or a native caller of the
library skips that check, so the compiled model bounds its own gathers:

- negative indices count from the end, as ONNX ``Gather`` defines (``i < 0 -> i + rows``);
- the result is clamped to ``[0, rows - 1]``, so an index still out of range reads the first or
  last row (an id of ``10**12`` reads the last row, ``-rows - 7`` the first).

In-range indices give the same result as before. The ONNX importer already normalizes negatives
(``where(i < 0, i + rows, i)``); such an index is only clamped, not normalized twice. The bounds
are separate bindings before the ``take`` (``maximum(minimum(i, rows - 1), 0)``), not ``take``'s
``mode="clip"``, so rewrites that rebuild the gather (the int8 embedding), the numpy interpreter
and the Core ML export keep them. Constant indices are bounded at compile time; ``take`` calls
already in ``clip``/``wrap``/``nan`` mode are left alone. The bound applies to the index the
``take`` reads: TVM's torch importer casts int64 ids to int32 first, so there an id past int32's
range wraps before it is bounded (the read still stays inside the table).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from edgecompile.ir.ops import const_array, op_name, scalar_value
from edgecompile.passes.rewrite import rewrite_functions


def _is_int(dtype: str) -> bool:
    return dtype.startswith(("int", "uint"))


def _rows(x, axis) -> int | None:
    """The static extent of ``x`` along ``axis`` (all elements if axis is None); None if symbolic."""
    ty = x.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = list(ty.shape.values)
    if not all(hasattr(d, "value") for d in dims):
        return None
    sizes = [int(d.value) for d in dims]
    if axis is None:
        return int(np.prod(sizes))
    return sizes[int(axis)]


def bound_constant(indices: np.ndarray, rows: int) -> np.ndarray:
    """``indices`` normalized (negatives count from the end) and clamped to ``[0, rows - 1]``."""
    wide = indices.astype(np.int64)
    if indices.dtype.kind == "i":
        wide = np.where(wide < 0, wide + rows, wide)
    return np.clip(wide, 0, rows - 1).astype(indices.dtype)


@relax.expr_functor.mutator
class _BoundTakes(relax.PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        if op_name(call) != "relax.take" or str(call.attrs.mode) != "fast":
            return call
        x, idx = call.args
        ty = idx.ty
        if not isinstance(ty, relax.TensorType) or not _is_int(str(ty.dtype)):
            return call
        axis = call.attrs.axis
        rows = _rows(x, None if axis is None else int(axis))
        if rows is None:  # a symbolic table: TVM's own clamp, without ONNX's negative indices
            return relax.op.take(x, idx, axis=axis, mode="clip")
        if rows == 0:
            return call
        safe = self._bounded(idx, str(ty.dtype), rows)
        if safe is idx:
            return call
        return relax.Call(call.op, [x, safe], call.attrs)

    def _bounded(self, idx, dtype: str, rows: int):
        a = const_array(idx)
        if a is not None:
            b = bound_constant(a, rows)
            return idx if np.array_equal(a, b) else relax.const(b, dtype)
        op = relax.op
        if dtype.startswith("int") and not self._normalized(idx):
            neg = self.builder_.emit(op.less(idx, relax.const(0, dtype)), name_hint="ids_negative")
            wrapped = self.builder_.emit(op.add(idx, relax.const(rows, dtype)), name_hint="ids_from_end")
            idx = self.builder_.emit(op.where(neg, wrapped, idx), name_hint="ids_wrapped")
        low = self.builder_.emit(op.minimum(idx, relax.const(rows - 1, dtype)), name_hint="ids_below")
        return self.builder_.emit(op.maximum(low, relax.const(0, dtype)), name_hint="ids_bounded")

    def _value(self, e):
        """What a variable is bound to (the expression itself if it is not a bound variable)."""
        if isinstance(e, relax.Var):
            bound = self.lookup_binding(e)
            return bound if bound is not None else e
        return e

    def _normalized(self, idx) -> bool:
        """``idx`` is ``where(less(i, 0), _, i)``: negatives already count from the end."""
        w = self._value(idx)
        if op_name(w) != "relax.where":
            return False
        cond, _, i = w.args
        c = self._value(cond)
        return op_name(c) == "relax.less" and c.args[0].same_as(i) and scalar_value(c.args[1]) == 0


@tvm.transform.module_pass(opt_level=0, name="BoundGathers")
class BoundGathers:
    """Clamp the integer indices of every ``relax.take`` into its table (see the module docstring)."""

    def transform_module(self, mod, _ctx):
        return rewrite_functions(mod, _BoundTakes(mod))
