"""The linear layers of a Relax function, named as the int8 recipe names them (``linear.N``, N in
graph order among the linear layers), so a ``lowrank`` manifest and an ``int8`` one agree on a
model's layer names. A linear layer is ``matmul(x, W)`` with a float32 variable ``x`` and a constant
float32 2-D ``W``; its output is the add of a constant float32 bias of ``W``'s width after it, where
that add is the matmul's only reader (else the matmul itself).

The stage packages are siblings that do not import each other, so this is the same rule as
:func:`edgecompile.ir.layers.find_layers`' linear layers, written here; ``tests/unit/lowrank``
checks that both find the same layers under the same names.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from tvm import relax

from edgecompile.ir.ops import const_array, is_float_var, op_name
from edgecompile.ir.walk import bindings


class Linear(NamedTuple):
    name: str  # linear.N
    binding: relax.VarBinding  # the matmul
    output: relax.Var  # the layer's float output: after its folded bias, if any


def linear_layers(func: relax.Function) -> list[Linear]:
    """Every linear layer of ``func`` in graph order (module docstring)."""
    readers = _readers(func)
    out: list[Linear] = []
    for b in bindings(func):
        if op_name(b.value) != "relax.matmul" or not is_float_var(b.value.args[0]):
            continue
        w = const_array(b.value.args[1])
        if w is None or w.ndim != 2 or w.dtype != np.float32:
            continue
        bias = _bias(b, readers, w.shape[1])
        out.append(Linear(f"linear.{len(out)}", b, bias.var if bias is not None else b.var))
    return out


def _readers(func: relax.Function) -> dict:
    """Each var -> the bindings that read it (None: the function's output)."""
    readers: dict = {}
    for b in bindings(func):
        for v in relax.analysis.free_vars(b.value) if not isinstance(b.value, relax.Var) else [b.value]:
            readers.setdefault(v, []).append(b)
    for v in relax.analysis.free_vars(func.body.body):
        readers.setdefault(v, []).append(None)
    return readers


def _bias(b: relax.VarBinding, readers: dict, channels: int) -> relax.VarBinding | None:
    """The add of a constant float32 bias of ``channels`` values to ``b``'s var, if it is its only reader."""
    users = readers.get(b.var, [])
    if len(users) != 1 or users[0] is None or op_name(users[0].value) != "relax.add":
        return None
    other = [a for a in users[0].value.args if not a.same_as(b.var)]
    bias = const_array(other[0]) if len(other) == 1 else None
    if bias is not None and bias.dtype == np.float32 and bias.size == channels and bias.shape[-1] == channels:
        return users[0]
    return None
