"""Reading Relax expressions: a call's op name, constant tensors and scalars, static shapes, float
tensors."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant


def op_name(value) -> str:
    """The operator name of a call (``relax.matmul``); '' for anything that is not a call of an op."""
    return getattr(getattr(value, "op", None), "name", "") if isinstance(value, relax.Call) else ""


def const_array(e) -> np.ndarray | None:
    """The value of a constant tensor as numpy; None for anything else."""
    return e.value.numpy() if isinstance(e, Constant) and hasattr(e.value, "numpy") else None


def scalar_value(e) -> float | None:
    """A one-element constant (any dtype, any rank) as a Python float; None for anything else."""
    a = const_array(e)
    if a is None:
        v = getattr(e, "value", None)
        return float(v) if isinstance(e, Constant) and isinstance(v, (int, float)) else None
    return float(a.reshape(-1)[0]) if a.size == 1 else None


def scalar_f32(e) -> float | None:
    """A one-element float32 constant as a Python float (the scales and masks our rewrites fold)."""
    a = const_array(e)
    if a is None or a.size != 1 or a.dtype != np.float32:
        return None
    return float(a.reshape(()))


def static_shape(e) -> list[int] | None:
    """The dimensions of a tensor expression whose shape is all constants; None otherwise."""
    values = getattr(getattr(getattr(e, "ty", None), "shape", None), "values", None)
    if values is None or not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        return None
    return [int(v) for v in values]


def is_float_var(e) -> bool:
    """A variable holding a float32 tensor."""
    return isinstance(e, relax.Var) and isinstance(e.ty, relax.TensorType) and str(e.ty.dtype) == "float32"


def is_tensor(e) -> bool:
    """A variable or constant of tensor type."""
    return isinstance(e, (relax.Var, Constant)) and isinstance(e.ty, relax.TensorType)
