"""Finding softmax attention blocks in a Relax function, whatever the exporter wrote.

A block is ``P = softmax(Q K^T [* s | / s] [+ mask])`` over the last axis, then ``O = P V``
(``P`` possibly wrapped in exporters' ``where(isnan(P), 0, P)`` guard). ``Q`` is the first
operand of the logits matmul and ``K^T`` the second, as written (3-D ``[B*H, N, d]`` from
``nn.MultiheadAttention``'s TorchScript export, 4-D ``[B, H, N, d]`` from hand-written BERT/ViT
or SDPA, where the dynamo exporter scales ``Q`` and ``K`` before the matmul). The mask must be
additive and the same for every query (key padding, ``[..., 1, N]``); a block with a per-query
mask (causal) or whose scores or probabilities have other readers is left alone, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tvm import relax
from tvm.ir.expr import Constant

from edgecompile.ir.ops import is_tensor, op_name, scalar_value
from edgecompile.ir.walk import bindings


@dataclass
class AttentionBlock:
    name: str  # attn.K in graph order
    q: relax.Var  # [..., N, d]
    kt: relax.Expr  # [..., d, N]
    v: relax.Var  # [..., N, dv]
    scale: float  # logits = scale * Q K^T (+ mask)
    mask: relax.Expr | None  # additive, [..., 1, N] broadcast
    logits: relax.Var  # the softmax input (scaled, mask added)
    output: relax.Var  # P V
    interior: list = field(default_factory=list)  # vars only this block reads
    reason: str = ""  # why it cannot be rewritten ('' if it can)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.q.ty.shape.values)

    @property
    def seq(self) -> int:
        return self.shape[-2]

    @property
    def dims(self) -> tuple[int, int, int, int]:
        """``(G, N, d, dv)``: groups (the leading axes, heads), sequence, query/key and value width."""
        shape = self.shape
        g = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        dv = int(self.v.ty.shape.values[-1])
        return g, shape[-2], shape[-1], dv


def find_attention(func: relax.Function) -> list[AttentionBlock]:
    """Every softmax attention block of ``func`` in graph order (see the module docstring)."""
    binds = list(bindings(func))
    value = {b.var: b.value for b in binds}
    uses: dict = {}
    for b in binds:
        for v in relax.analysis.free_vars(b.value):
            uses.setdefault(v, []).append(b.var)
    for v in relax.analysis.free_vars(func.body.body):
        uses.setdefault(v, []).append(None)
    blocks = []
    for b in binds:
        if op_name(b.value) != "relax.nn.softmax" or int(b.value.attrs.axis) not in (
            -1,
            len(b.var.ty.shape.values) - 1,
        ):
            continue
        block = _match(b.var, value, uses)
        if block is not None:
            block.name = f"attn.{len(blocks)}"
            blocks.append(block)
    return blocks


def _match(p: relax.Var, value: dict, uses: dict) -> AttentionBlock | None:
    scores = _match_scores(p, value)
    if scores is None:
        return None
    interior, logits_var, mask, scale, q, kt = scores
    tail = _match_output(p, value, uses, interior)
    if tail is None:
        return None
    pv, v = tail
    reason = _reason(q, mask, interior, uses, pv)
    return AttentionBlock("", q, kt, v, scale, mask, logits_var, pv, interior, reason)


def _match_scores(p: relax.Var, value: dict) -> tuple | None:
    """Backwards from the softmax input: ``[+ mask] [* or / scalar] matmul(Q, K^T)``; returns
    ``(interior, logits, mask, scale, Q, K^T)`` (``interior``: ``P`` and the vars between)."""
    interior = [p]
    x = logits_var = value[p].args[0]
    mask, scale = None, 1.0
    if isinstance(x, relax.Var) and op_name(value.get(x)) == "relax.add":
        a, c = value[x].args
        interior.append(x)
        score_side = [e for e in (a, c) if isinstance(e, relax.Var) and op_name(value.get(e)) in _SCORE_OPS]
        if not score_side:
            return None
        other = c if score_side[0] is a else a
        mask, x = other, score_side[0]
    while isinstance(x, relax.Var) and op_name(value.get(x)) in ("relax.multiply", "relax.divide"):
        s = scalar_value(value[x].args[1])
        if s is None or s == 0:
            return None
        scale = scale * s if op_name(value[x]) == "relax.multiply" else scale / s
        interior.append(x)
        x = value[x].args[0]
    if not (isinstance(x, relax.Var) and op_name(value.get(x)) == "relax.matmul"):
        return None
    q, kt = value[x].args
    interior.append(x)
    if not (is_tensor(q) and is_tensor(kt)) or isinstance(q, Constant) or isinstance(kt, Constant):
        return None
    return interior, logits_var, mask, scale, q, kt


def _match_output(p: relax.Var, value: dict, uses: dict, interior: list) -> tuple | None:
    """Forwards from ``P``: ``[where(isnan(P), 0, P)]`` then ``matmul(P, V)``; returns ``(PV, V)``,
    the guard's vars appended to ``interior``."""
    out = p
    users = uses.get(p, [])
    guard = [u for u in users if u is not None and op_name(value.get(u)) == "relax.where"]
    if guard:
        interior += [u for u in users if u is not None]  # isnan(P) and the where
        out = guard[0]
        users = uses.get(out, [])
    pv = [
        u for u in users if u is not None and op_name(value.get(u)) == "relax.matmul" and value[u].args[0].same_as(out)
    ]
    if len(pv) != 1:
        return None
    v = value[pv[0]].args[1]
    if not isinstance(v, relax.Var):
        return None
    return pv[0], v


def _reason(q, mask, interior: list, uses: dict, pv: relax.Var) -> str:
    """Why the matched block cannot be rewritten ('' if it can)."""
    reason = ""
    shape_q = [int(d) for d in q.ty.shape.values]
    if mask is not None:
        mshape = [int(d) for d in mask.ty.shape.values] if is_tensor(mask) else None
        if mshape is None or (len(mshape) >= 2 and mshape[-2] != 1):
            reason = "the mask differs per query (causal or 2-D): linear attention needs a key mask"
    for var in interior[:-1]:  # every intermediate is read only inside the block
        if any(u is not None and u not in interior and u != pv for u in uses.get(var, [])):
            reason = reason or f"{var.name} is also read outside the attention block"
    if len(shape_q) < 2 or shape_q[-2] < 2:
        reason = reason or "no sequence axis"
    return reason


_SCORE_OPS = ("relax.matmul", "relax.multiply", "relax.divide")
