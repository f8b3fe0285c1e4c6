"""Find the linear layers a low-rank recipe may factorize, and rewrite them.

Candidates are the linear layers of :func:`edgecompile.ir.layers.find_layers` (``matmul(x, W)``
with a constant 2-D ``W``, bias folded after it), named ``linear.N`` as every stage names them.
``layers=ffn`` keeps the feed-forward ones: a linear whose output (after its bias) feeds a GELU
(any form :mod:`edgecompile.ir.gelu_match` recognises) or a ReLU is an FFN ``up``, a linear reading
a GELU/ReLU output is an FFN ``down``. ``all-linear`` takes every linear layer (attention
projections, patch embedding, heads).

The rewrite replaces ``matmul(x, W)`` by ``matmul(matmul(x, P), Q)``; the bias stays after ``Q``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax

from edgecompile.ir.gelu_match import find_gelu_regions
from edgecompile.ir.layers import find_layers
from edgecompile.ir.ops import const_array, op_name
from edgecompile.ir.walk import bindings, rebuild


@dataclass
class Site:
    """One factorizable linear layer."""

    name: str
    role: str  # ffn-up | ffn-down | linear
    binding: relax.VarBinding  # the matmul
    x: relax.Var  # its input
    weight: np.ndarray  # [in, out]

    @property
    def tokens(self) -> int:
        return int(np.prod([int(d) for d in self.x.ty.shape.values[:-1]]))


def find_sites(func: relax.Function, layers: str = "ffn") -> list[Site]:
    """The linear layers of ``func`` to consider, in graph order (``layers``: ffn | all-linear)."""
    regions = find_gelu_regions(func)
    act_in = {r.x for r in regions}
    act_out = {r.y for r in regions}
    for b in bindings(func):
        if op_name(b.value) == "relax.nn.relu":
            act_in.add(b.value.args[0])
            act_out.add(b.var)
    sites = []
    for layer in (layer for layer in find_layers(func) if layer.kind == "linear"):
        x = layer.binding.value.args[0]
        role = "ffn-up" if layer.output in act_in else "ffn-down" if x in act_out else "linear"
        if layers == "ffn" and role == "linear":
            continue
        sites.append(Site(layer.name, role, layer.binding, x, const_array(layer.binding.value.args[1])))
    return sites


def factorize_function(func: relax.Function, factors: dict, outputs: list | None = None) -> relax.Function:
    """``func`` with each site's matmul (``factors``: matmul var -> ``(P, Q)``) split in two;
    ``outputs`` (vars of ``func``) are appended to its outputs, as
    :func:`edgecompile.calibrate.capture.with_outputs` does."""

    def split(bb, b, m):
        pq = factors.get(b.var)
        if pq is None:
            return None
        p, q = (a.astype(np.float32) for a in pq)
        t = bb.emit(relax.op.matmul(m[b.value.args[0]], relax.const(p)), name_hint=f"{b.var.name}_lowrank")
        return bb.emit(relax.op.matmul(t, relax.const(q)), name_hint=b.var.name)

    return rebuild(func, split, outputs)["main"]
