"""The named layers of a Relax function: the :class:`Layer` s the int8 rewrite quantizes (linear
layers, activation matmuls, adds, embeddings; integer-only also softmax, GELU, LayerNorm, tanh,
concat and adds with a constant or float operand), and the tensors calibration must observe for them.

Layer names are the kind and its index in graph order (``linear.0``, ``matmul.3``, ``add.1``). They
live in the IR floor because every stage and report names layers the same way: ``keep_float`` of
int8, the factorized layers of ``lowrank``, per-layer sensitivity and ``inspect``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np
from tvm import relax

from edgecompile.ir.gelu_match import find_gelu_regions
from edgecompile.ir.ops import const_array, is_float_var, op_name, scalar_f32
from edgecompile.ir.walk import bindings

EMBEDDING_MIN = 4096  # smaller gathered tables stay float: nothing to gain

LAYOUT_OPS = {
    "relax.reshape",
    "relax.permute_dims",
    "relax.expand_dims",
    "relax.squeeze",
    "relax.flatten",
    "relax.take",
    "relax.strided_slice",
}


@dataclass
class Layer:
    """One quantizable op, found by :func:`find_layers`."""

    name: str
    kind: str  # linear | matmul | add | embedding (+ softmax | gelu | layernorm | tanh | concat, integer-only)
    binding: relax.VarBinding
    output: relax.Var  # the var holding the layer's float output (after a folded bias)
    inputs: tuple[relax.Var, ...]
    bias_binding: relax.VarBinding | None = None
    info: dict = field(default_factory=dict)  # scales etc., filled by the rewrite
    region: object = None  # a GELU's matched region (edgecompile.ir.gelu_match.GeluRegion)

    def matches(self, patterns) -> bool:
        """Whether one of ``patterns`` (layer names or fnmatch patterns, as ``keep_float`` takes) names it."""
        return any(fnmatch.fnmatchcase(self.name, p) for p in patterns)


def find_layers(func: relax.Function, integer_only: bool = False) -> list[Layer]:
    """The quantizable ops of ``func`` in graph order, with their names; ``integer_only`` adds the
    nonlinears, concats and adds with a constant or a float operand."""
    layers = _int8_layers(func)
    if integer_only:
        layers = _with_nonlinear_layers(func, layers)
    counts: dict[str, int] = {}
    for layer in layers:
        layer.name = f"{layer.kind}.{counts.get(layer.kind, 0)}"
        counts[layer.kind] = counts.get(layer.kind, 0) + 1
    return layers


# -- the int8 recipe's layers --------------------------------------------------------------------
def _int8_layers(func: relax.Function) -> list[Layer]:
    uses = _users(func)
    layers = []
    for b in bindings(func):
        op, v = op_name(b.value), b.value
        layer = None
        if op == "relax.matmul":
            layer = _matmul_layer(b, uses)
        elif op == "relax.take" and int(v.attrs.axis) == 0:
            table = const_array(v.args[0])
            if table is not None and table.ndim == 2 and table.dtype == np.float32 and table.size >= EMBEDDING_MIN:
                layer = Layer("", "embedding", b, b.var, ())
        elif op == "relax.add" and all(is_float_var(a) for a in v.args):
            if tuple(v.args[0].ty.shape.values) and len(v.args[0].ty.shape.values) == len(v.args[1].ty.shape.values):
                layer = Layer("", "add", b, b.var, (v.args[0], v.args[1]))
        if layer is not None:
            layers.append(layer)
    return layers


def _users(func: relax.Function) -> dict:
    """Each var -> the bindings that read it (None: the function's output)."""
    uses: dict = {}
    for b in bindings(func):
        for v in relax.analysis.free_vars(b.value) if not isinstance(b.value, relax.Var) else [b.value]:
            uses.setdefault(v, []).append(b)
    for v in relax.analysis.free_vars(func.body.body):
        uses.setdefault(v, []).append(None)
    return uses


def _matmul_layer(b: relax.VarBinding, uses: dict) -> Layer | None:
    """``matmul(x, W)`` with a float ``x``: a linear layer (constant ``W``, with the constant bias
    added after it folded in) or a matmul of two activations."""
    v = b.value
    if not is_float_var(v.args[0]):
        return None
    w = const_array(v.args[1])
    if w is not None and w.ndim == 2 and w.dtype == np.float32:
        bias_b = _bias_binding(b, uses, w.shape[1])
        out = bias_b.var if bias_b is not None else b.var
        return Layer("", "linear", b, out, (v.args[0],), bias_b)
    if is_float_var(v.args[1]):
        return Layer("", "matmul", b, b.var, (v.args[0], v.args[1]))
    return None


def _bias_binding(b: relax.VarBinding, uses: dict, channels: int) -> relax.VarBinding | None:
    """The add of a constant float32 bias of ``channels`` values to ``b``'s var, if it is its only reader."""
    users = uses.get(b.var, [])
    if len(users) != 1 or users[0] is None or op_name(users[0].value) != "relax.add":
        return None
    other = [a for a in users[0].value.args if not a.same_as(b.var)]
    bias = const_array(other[0]) if len(other) == 1 else None
    if bias is not None and bias.dtype == np.float32 and bias.size == channels and bias.shape[-1] == channels:
        return users[0]
    return None


# -- the integer-only recipe's layers ------------------------------------------------------------
def _with_nonlinear_layers(func: relax.Function, layers: list[Layer]) -> list[Layer]:
    """``layers`` plus the integer-only recipe's: softmax, GELU regions, LayerNorm, tanh, concat
    and adds with a constant or float operand; in graph order."""
    claimed = {layer.binding.var for layer in layers}
    claimed |= {layer.bias_binding.var for layer in layers if layer.bias_binding is not None}
    regions = {r.y: r for r in find_gelu_regions(func)}
    interior = {v for r in regions.values() for v in r.interior}
    extra = []
    for b in bindings(func):
        v = b.var
        if v in claimed or v in interior or not op_name(b.value):
            continue
        if v in regions:
            extra.append(Layer("", "gelu", b, v, (regions[v].x,), info={}, region=regions[v]))
        elif (match := _NONLINEAR_MATCHERS.get(op_name(b.value))) is not None and (layer := match(b)) is not None:
            extra.append(layer)
    order = {b.var: i for i, b in enumerate(bindings(func))}
    return sorted([*layers, *extra], key=lambda layer: order[layer.binding.var])


def _last_axis(axis, ndim: int) -> bool:
    return int(axis) in (-1, ndim - 1)


def _ndim(v: relax.Var) -> int:
    return len(v.ty.shape.values) if isinstance(v.ty, relax.TensorType) and v.ty.shape is not None else 0


def _float_input(b: relax.VarBinding) -> relax.Var | None:
    """The op's first argument if it is a float var."""
    args = b.value.args
    x = args[0] if args and isinstance(args[0], relax.Var) else None
    return x if is_float_var(x) else None


def _softmax(b: relax.VarBinding) -> Layer | None:
    x = _float_input(b)
    if x is not None and _last_axis(b.value.attrs.axis, _ndim(b.var)):
        return Layer("", "softmax", b, b.var, (x,))
    return None


def _layernorm(b: relax.VarBinding) -> Layer | None:
    """Over the last axis, with constant gamma and beta."""
    x = _float_input(b)
    if x is None:
        return None
    axes = [int(a) for a in b.value.attrs.axes]
    consts = [const_array(a) for a in b.value.args[1:]]
    if len(axes) == 1 and _last_axis(axes[0], _ndim(b.var)) and all(c is not None for c in consts):
        return Layer("", "layernorm", b, b.var, (x,))
    return None


def _tanh(b: relax.VarBinding) -> Layer | None:
    x = _float_input(b)
    return Layer("", "tanh", b, b.var, (x,)) if x is not None else None


def _concat(b: relax.VarBinding) -> Layer | None:
    """Of float tensors and constants, at least one tensor."""
    if not isinstance(b.value.args[0], relax.Tuple):
        return None
    fields = b.value.args[0].fields
    if all(is_float_var(f) or const_array(f) is not None for f in fields) and any(
        isinstance(f, relax.Var) for f in fields
    ):
        return Layer("", "concat", b, b.var, tuple(f for f in fields if isinstance(f, relax.Var)))
    return None


def _add(b: relax.VarBinding) -> Layer | None:
    """Of float tensors and constants, at least one tensor."""
    args = b.value.args
    vars_ = [a for a in args if is_float_var(a)]
    if is_float_var(b.var) and vars_ and all(is_float_var(a) or const_array(a) is not None for a in args):
        return Layer("", "add", b, b.var, tuple(vars_))
    return None


_NONLINEAR_MATCHERS = {
    "relax.nn.softmax": _softmax,
    "relax.nn.layer_norm": _layernorm,
    "relax.tanh": _tanh,
    "relax.concat": _concat,
    "relax.add": _add,
}


# -- what calibration observes -------------------------------------------------------------------
def observed_vars(layers: list[Layer]) -> list[relax.Var]:
    """The float tensors whose ranges the rewrite needs: every layer's inputs and output."""
    seen, out = set(), []
    for layer in layers:
        for v in (*layer.inputs, layer.output):
            if v not in seen:
                seen.add(v)
                out.append(v)
    return out


def linear_inputs(layers: list[Layer]) -> dict[relax.Var, list[Layer]]:
    """Each tensor that linear layers read, with those layers (q, k and v share one)."""
    out: dict = {}
    for layer in layers:
        if layer.kind == "linear":
            out.setdefault(layer.inputs[0], []).append(layer)
    return out


def nonnegative_vars(func: relax.Function) -> set[relax.Var]:
    """Tensors of probabilities in ``[0, 1]``: softmax outputs, layout ops of them, and the
    ``where(isnan(P), 0, P)`` guard exporters wrap them in."""
    out: set = set()
    for b in bindings(func):
        name, value = op_name(b.value), b.value
        if name == "relax.nn.softmax":
            out.add(b.var)
        elif name in LAYOUT_OPS and value.args[0] in out:
            out.add(b.var)
        elif name == "relax.where" and scalar_f32(value.args[1]) == 0.0 and value.args[2] in out:
            out.add(b.var)
    return out
