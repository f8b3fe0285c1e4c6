"""Layer switches: one build that computes chosen layers both ways, with a runtime input picking the
form per layer. Per-layer sensitivity (int8) and the hash-attention gate try many choices of
layers on one build instead of one build per choice.

A switched ``main`` takes one more input, :data:`SWITCH_INPUT`: an int32 vector with one flag per
switchable layer, in the order the rewrite lists them (1: the rewritten form, 0: the original).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from tvm import relax

SWITCH_INPUT = "edgecompile_switch"


def switch_var(count: int) -> relax.Var:
    """The switch input of a module with ``count`` switchable layers."""
    return relax.Var(SWITCH_INPUT, relax.TensorType((count,), "int32"))


def choose(flags: relax.Var, k: int, rewritten: relax.Expr, original: relax.Expr) -> relax.Expr:
    """``rewritten`` where layer ``k``'s flag is 1, else ``original``."""
    on = relax.op.equal(relax.op.take(flags, relax.const(np.int32(k)), axis=0), relax.const(np.int32(1)))
    return relax.op.where(on, rewritten, original)


def flags(count: int, on: Iterable[int] = ()) -> np.ndarray:
    """The switch value with the layers ``on`` (indices) in their rewritten form."""
    out = np.zeros(count, np.int32)
    out[list(on)] = 1
    return out


def switch_width(mod) -> int:
    """The length of the switch input of a switched module's ``main``."""
    param = mod["main"].params[-1]
    if param.name != SWITCH_INPUT:
        raise ValueError("the module has no layer switch")
    return int(param.ty.shape.values[0])
