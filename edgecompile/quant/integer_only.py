"""The integer-only rewrite: the int8 rewrite plus integer softmax, GELU, LayerNorm, tanh,
embeddings, concats and adds, so no float arithmetic is left between the input quantize and the
output dequantize (``int8-integer-only`` recipes).

Tensors are int8 at a scale (``q``) or int32 at a scale (``acc``, per channel after a linear or
LayerNorm); an op reads the finest form it can. What each op emits:

- ``softmax`` over the last axis, on the int32 logits at their own scale (straight from the
  ``Q K^T`` accumulator, mask added in integers): I-ViT's Shiftmax (``ivit``: rounded, ``n`` lowered
  so the row sum fits 31 bits, logits rescaled first when ``I0 = 1/S`` is too large for that) or
  I-BERT's i-exp softmax (``ibert``: int64 inside, logits at no finer scale than ``2^-13``); both
  normalize each row with a 64-bit reciprocal (I-ViT's 32-bit one keeps too few bits on long or
  flat rows: ``nonlinear.shiftmax``). Out:
  ``[0, 255]`` at ``2^-8`` (int32), which the ``P V`` integer matmul reads as int8 ``u - 128``
  and corrects with ``128 * sum_k V[k, :]`` (twice the resolution of ``[0, 127]``).
- ``gelu`` (one op, or any erf/tanh decomposition :mod:`edgecompile.ir.gelu_match` recognises):
  ShiftGELU on the int8 input (``ivit``; as a 256-entry table built by the same integer
  arithmetic: its per-element division would cost more than the float GELU; inputs past the int8
  range, when it reaches 3, pass through as ``GELU(x) = x``) or i-GELU on a 16-bit
  input (``ibert``, int64 inside, shifted back into int32; no division).
- ``layernorm`` over the last axis (constant gamma/beta): I-LayerNorm (integer mean, sum of squares in
  int64, exact integer square root) on a per-tensor input of at most 16 bits; gamma becomes a per
  channel output scale and beta an int32 offset. ``ibert`` uses the same integer-sqrt LayerNorm.
- ``tanh`` (BERT's pooler): ``2 sigmoid(2x) - 1`` from ShiftExp, 16-bit output (a table too).
- ``add`` of two integer tensors or of one and a constant, and ``concat``: every operand rescaled
  (dyadically) to a fine scale ``S_y / FINE`` and kept as int16-range values in int32, so residual
  streams feed LayerNorm with 16 bits, not 8. An add of an integer tensor and a float tensor
  computed from the inputs (an additive attention mask) quantizes the float side at the integer
  side's scale (clipped to ``+-2^29``) and adds in int32: masks of -10000 or -inf stay exact.
- ``embedding``: int8 rows times a per-row integer multiplier (``round(S_row / S_e)``, ``S_e`` = the
  largest row scale / 2^12), int32 out.

Per-op choices come from the recipe (``ops=ivit|ibert`` and ``softmax=``, ``gelu=``, ``layernorm=``,
``tanh=`` overrides, ``float`` keeping that op in float with explicit (de)quantization around it).
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from edgecompile.intref import nonlinear as nl
from edgecompile.ir.gelu_match import find_gelu_regions
from edgecompile.ir.walk import bindings
from edgecompile.quant import emit as iop
from edgecompile.quant.rewrite import LAYOUT_OPS, Layer, Rewriter, _const_array, _is_float_var, op_name

op = relax.op
FINE = 64  # residual-stream tensors: int16-range values at the calibrated scale / FINE (4x headroom)
FINE_MAX = 2**15 - 1
GELU_TAIL_MIN = 3.0  # ShiftGELU passes x through beyond the int8 range when that range reaches this
RESIDUAL_HEADROOM = 1.25  # over the calibration maximum, for a 16-bit residual-stream tensor
MASK_MAX = 2**29  # a quantized additive mask is clipped here, so logit + mask stays in int32
IBERT_MIN_SCALE = 2.0**-13  # i-exp's int64 widths hold for logits at no finer scale than this
EMBED_BITS = 12

NONLINEAR_KINDS = ("softmax", "gelu", "layernorm", "tanh")
IMPLEMENTATIONS = {
    "softmax": ("ivit", "ibert", "float"),
    "gelu": ("ivit", "ibert", "float"),
    "layernorm": ("ivit", "ibert", "float"),
    "tanh": ("ivit", "float"),
}
FLAVORS = {
    "ivit": {"softmax": "ivit", "gelu": "ivit", "layernorm": "ivit", "tanh": "ivit"},
    "ibert": {"softmax": "ibert", "gelu": "ibert", "layernorm": "ibert", "tanh": "ivit"},
}


def _last_axis(axis, ndim: int) -> bool:
    return int(axis) in (-1, ndim - 1)


def find_nonlinear_layers(func: relax.Function, layers: list[Layer]) -> list[Layer]:
    """``layers`` (from the int8 search) plus the integer-only recipe's: softmax, GELU regions,
    LayerNorm, tanh, concat and adds with a constant operand; renumbered in graph order."""
    claimed = {layer.binding.var for layer in layers}
    claimed |= {layer.bias_binding.var for layer in layers if layer.bias_binding is not None}
    regions = {r.y: r for r in find_gelu_regions(func)}
    interior = {v for r in regions.values() for v in r.interior}
    extra = []
    for b in bindings(func):
        v, val, name = b.var, b.value, op_name(b.value)
        if v in claimed or v in interior or not name:
            continue
        args = val.args
        x = args[0] if args and isinstance(args[0], relax.Var) else None
        ndim = len(v.ty.shape.values) if isinstance(v.ty, relax.TensorType) and v.ty.shape is not None else 0
        if v in regions:
            r = regions[v]
            extra.append(Layer("", "gelu", b, v, (r.x,), info={}, region=r))
        elif name == "relax.nn.softmax" and _is_float_var(x) and _last_axis(val.attrs.axis, ndim):
            extra.append(Layer("", "softmax", b, v, (x,)))
        elif name == "relax.nn.layer_norm" and _is_float_var(x):
            axes = [int(a) for a in val.attrs.axes]
            consts = [_const_array(a) for a in args[1:]]
            if len(axes) == 1 and _last_axis(axes[0], ndim) and all(c is not None for c in consts):
                extra.append(Layer("", "layernorm", b, v, (x,)))
        elif name == "relax.tanh" and _is_float_var(x):
            extra.append(Layer("", "tanh", b, v, (x,)))
        elif name == "relax.concat" and isinstance(args[0], relax.Tuple):
            fields = args[0].fields
            if all(_is_float_var(f) or _const_array(f) is not None for f in fields) and any(
                isinstance(f, relax.Var) for f in fields
            ):
                extra.append(Layer("", "concat", b, v, tuple(f for f in fields if isinstance(f, relax.Var))))
        elif name == "relax.add" and _is_float_var(v):
            vars_ = [a for a in args if _is_float_var(a)]
            if vars_ and all(_is_float_var(a) or _const_array(a) is not None for a in args):
                extra.append(Layer("", "add", b, v, tuple(vars_)))
    order = {b.var: i for i, b in enumerate(bindings(func))}
    out = sorted([*layers, *extra], key=lambda layer: order[layer.binding.var])
    counts: dict[str, int] = {}
    for layer in out:
        layer.name = f"{layer.kind}.{counts.get(layer.kind, 0)}"
        counts[layer.kind] = counts.get(layer.kind, 0) + 1
    return out


def _lookup(table: np.ndarray, q: relax.Expr) -> relax.Expr:
    """``table[q + 128]`` for int8 ``q``: an op of one int8 input is a 256-entry table, filled at
    compile time by the op's own integer arithmetic (:mod:`edgecompile.intref.nonlinear`), so the
    kernel gathers instead of dividing per element and the result is the same bit for bit."""
    idx = op.add(op.astype(q, "int32"), relax.const(np.int32(128), "int32"))
    return op.take(relax.const(table.astype(np.int32), "int32"), idx, axis=0)


class IntegerOnlyRewriter(Rewriter):
    """:class:`edgecompile.quant.rewrite.Rewriter` with the integer-only ops (module docstring)."""

    def __init__(self, bb, thresholds, layers, keep_float, nonlinear: dict[str, str], smooth=None, maxima=None):
        super().__init__(bb, thresholds, layers, keep_float, smooth)
        self.maxima: dict = maxima or {}  # var -> largest |x| seen in calibration
        self.impl = dict(nonlinear)
        self.narrow: set = set()  # int32 tensors whose values fit 16 bits (LayerNorm reads them as they are)
        self.gelu_of = {v: layer for layer in layers if layer.kind == "gelu" for v in layer.region.interior}

    # -- helpers -------------------------------------------------------------------------------
    def active(self, layer: Layer) -> bool:
        if self.kept(layer):
            return False
        if layer.kind in NONLINEAR_KINDS:
            return self.impl.get(layer.kind, "float") != "float" and self.kind(layer.inputs[0]) != "f"
        return True

    def rewrite(self, layer: Layer) -> bool:
        return self.active(layer) and super().rewrite(layer)

    def skipped(self, v) -> bool:
        layer = self.gelu_of.get(v)
        return (layer is not None and self.active(layer)) or super().skipped(v)

    def as_int(self, v, narrow: bool = False):
        """``(expr, scale)``: ``v`` as integers at one scale for the whole tensor (int8 or int32)."""
        e = self.env.get(v)
        if e is not None and e[0] == "acc" and np.ndim(e[2]) == 0 and (not narrow or v in self.narrow):
            return e[1], float(e[2])
        return self.as_quant(v)

    def to_scale(self, x, s_out: float, limit: int = 2**30) -> relax.Expr:
        """``x`` (an integer tensor, a constant or a float tensor) as int64 at ``s_out``."""
        c = _const_array(x)
        if c is not None:
            return relax.const(np.clip(np.rint(c.astype(np.float64) / s_out), -limit, limit).astype(np.int64), "int64")
        e = self.env.get(x, ("f",))
        if e[0] == "q":
            return self.rescale(e[1], np.float64(e[2]) / s_out)
        if e[0] == "acc":
            return self.rescale(e[1], np.asarray(e[2], np.float64) / s_out)
        # a float tensor computed from the inputs (an attention mask): quantized in a kernel of its
        # own, so its float arithmetic is not fused into the integer kernel that reads it
        q = iop.emit_input_quantize(self.bb, self.as_float(x), 1.0 / np.float32(s_out), limit)
        return op.astype(q, "int64")

    def fine(self, layer: Layer, total: relax.Expr, s_fine: float):
        y = op.astype(op.clip(total, -FINE_MAX, FINE_MAX), "int32")
        self.env[layer.output] = ("acc", self.bb.emit(y, name_hint=layer.name), s_fine, self.scale[layer.output])
        self.narrow.add(layer.output)

    def set_acc(self, layer: Layer, y: relax.Expr, scale, narrow: bool = False):
        self.env[layer.output] = ("acc", self.bb.emit(y, name_hint=layer.name), scale, self.scale[layer.output])
        if narrow:
            self.narrow.add(layer.output)

    # -- layers --------------------------------------------------------------------------------
    def add(self, layer: Layer) -> bool:
        args = layer.binding.value.args
        ints = [a for a in args if isinstance(a, relax.Var) and self.kind(a) != "f"]
        floats = [a for a in args if isinstance(a, relax.Var) and self.kind(a) == "f"]
        if not ints:
            return False
        if floats:  # an additive mask computed from the inputs: added at the logits' own scale
            x, s = self.as_int(ints[0])
            total = op.add(op.astype(x, "int64"), self.to_scale(floats[0], s, MASK_MAX))
            self.set_acc(layer, op.astype(op.clip(total, -(2**31) + 1, 2**31 - 1), "int32"), s)
            layer.info = {"scale_in": s, "mask": True}
            return True
        # the residual stream keeps its rare huge channels (BERT's FFN writes 200 into one channel
        # where the percentile is 12): its 16 bits cover the largest value calibration saw
        s_fine = max(self.scale[layer.output] / FINE, RESIDUAL_HEADROOM * self.maxima.get(layer.output, 0.0) / FINE_MAX)
        self.fine(layer, op.add(self.to_scale(args[0], s_fine), self.to_scale(args[1], s_fine)), s_fine)
        layer.info = {"scale_out": self.scale[layer.output]}
        return True

    def concat(self, layer: Layer):
        call = layer.binding.value
        s_fine = self.scale[layer.output] / FINE
        parts = [op.clip(self.to_scale(f, s_fine), -FINE_MAX, FINE_MAX) for f in call.args[0].fields]
        self.fine(layer, relax.Call(call.op, [relax.Tuple(parts)], call.attrs), s_fine)
        layer.info = {"scale_out": self.scale[layer.output]}

    def softmax(self, layer: Layer):
        x, s = self.as_int(layer.inputs[0])
        row = int(layer.output.ty.shape.values[-1])
        impl = self.impl["softmax"]
        if impl == "ivit":
            s_new = iop.shiftmax_input_scale(s, row)
            if s_new != s:  # logits too fine for a 31-bit row sum at n = 15
                x, s = self._rescaled(x, s, s_new), s_new
            y = iop.emit_shiftmax(x, s, iop.shiftmax_n(row, s), 9, rounding=True, wide=True, bb=self.bb)
        else:
            if s < IBERT_MIN_SCALE:
                x, s = self._rescaled(x, s, IBERT_MIN_SCALE), IBERT_MIN_SCALE
            y = iop.emit_ibert_softmax(x, s, k=8, bb=self.bb)
        # [0, 255] at 2^-8 in int32: the P V matmul reads it as int8 u - 128 (Rewriter.as_unsigned)
        self.set_acc(layer, y, 1.0 / 256, narrow=True)
        layer.info = {"impl": impl, "scale_in": s, "scale_out": 1.0 / 256}

    def _rescaled(self, x, s: float, s_new: float) -> relax.Expr:
        y = op.clip(self.rescale(x, s / s_new), -(2**31) + 1, 2**31 - 1)
        return self.bb.emit(op.astype(y, "int32"))

    def gelu(self, layer: Layer):
        x = layer.inputs[0]
        impl = self.impl["gelu"]
        if impl == "ivit":
            q, s = self.as_quant(x)
            table = nl.shift_gelu(np.arange(-128, 128), s)
            y = _lookup(table, q)
            e = self.env.get(x)
            if e is not None and e[0] == "acc" and 127 * s >= GELU_TAIL_MIN:
                # past the int8 range GELU(x) = x (to 0.4% from 3 on): the rare huge activations
                # real BERTs have (25 where the 99.99th percentile is 12) pass through unclipped
                wide = op.clip(self.rescale(e[1], np.asarray(e[2], np.float64) / s), -(2**23), 2**23)
                tail = op.astype(op.multiply(wide, relax.const(np.int64(128), "int64")), "int32")
                y = op.where(op.greater(wide, relax.const(np.int64(127), "int64")), tail, y)
                self.set_acc(layer, y, s / 128)
            else:
                self.set_acc(layer, y, s / 128, narrow=True)  # |q * sigma| <= 2^14
        else:
            s = self.scale[x] / FINE
            x16 = op.clip(self.to_scale(x, s), -FINE_MAX, FINE_MAX)
            y, sy = iop.emit_i_gelu(x16, s)
            bound = iop.i_gelu_bound(s, FINE_MAX)
            shift = max(0, bound.bit_length() - 31)  # back into int32
            self.set_acc(
                layer, op.astype(op.right_shift(y, relax.const(np.int64(shift), "int64")), "int32"), sy * 2**shift
            )
        layer.info = {"impl": impl, "form": layer.region.form, "scale_out": self.scale[layer.output]}

    def layernorm(self, layer: Layer):
        call = layer.binding.value
        x, _ = self.as_int(layer.inputs[0], narrow=True)
        channels = int(layer.output.ty.shape.values[-1])
        gamma, beta = (_const_array(a).astype(np.float64).reshape(-1) for a in call.args[1:3])
        y, s = iop.emit_i_layernorm(self.bb, x, channels)
        g = np.where(np.abs(gamma) < 1e-6, np.where(gamma < 0, -1e-6, 1e-6), gamma)
        scale = s * g
        bq = np.clip(np.floor(beta / scale + 0.5), -(2**30 - 1), 2**30 - 1).astype(np.int32)
        self.set_acc(layer, op.add(y, relax.const(bq, "int32")), scale)
        layer.info = {"impl": self.impl["layernorm"], "scale_out": self.scale[layer.output]}

    def tanh(self, layer: Layer):
        q, s = self.as_quant(layer.inputs[0])
        self.set_acc(layer, _lookup(nl.shift_tanh(np.arange(-128, 128), s), q), 2.0**-15, narrow=True)
        layer.info = {"impl": self.impl["tanh"], "scale_out": self.scale[layer.output]}

    def embedding(self, layer: Layer):
        call = layer.binding.value
        table = _const_array(call.args[0])
        s = np.abs(table).max(axis=1).astype(np.float64) / 127.0
        s = np.where(s > 0, s, s.max() if s.max() > 0 else 1.0)
        q = np.clip(np.rint(table / s[:, None]), -127, 127).astype(np.int8)
        s_e = float(s.max()) / 2**EMBED_BITS
        mult = np.rint(s / s_e).astype(np.int32)
        ids = self.as_float(call.args[1]) if isinstance(call.args[1], relax.Var) else call.args[1]
        rows = op.astype(relax.Call(call.op, [relax.const(q, "int8"), ids], call.attrs), "int32")
        m = relax.Call(call.op, [relax.const(mult, "int32"), ids], call.attrs)
        self.set_acc(layer, op.multiply(rows, op.expand_dims(m, -1)), s_e)
        layer.info = {"scale_out": self.scale[layer.output]}

    # -- the walk ------------------------------------------------------------------------------
    def alias(self, v, x) -> None:
        if x in self.narrow:
            self.narrow.add(v)

    def binding(self, b):
        v, value, name = b.var, b.value, op_name(b.value)
        if v not in self.layers and name in LAYOUT_OPS and isinstance(value.args[0], relax.Var):
            e = self.env.get(value.args[0])
            if e is not None and e[0] == "acc" and np.ndim(e[2]) == 0:  # int32 at one scale: move as is
                new = relax.Call(value.op, [e[1], *value.args[1:]], value.attrs, value.ty_args)
                self.env[v] = ("acc", self.bb.emit(new, name_hint=v.name), e[2], e[3])
                if value.args[0] in self.narrow:
                    self.narrow.add(v)
                return None
        return super().binding(b)


def nonlinear_choice(options: dict[str, str]) -> dict[str, str]:
    """op -> implementation from an ``int8-integer-only`` recipe part's options."""
    from edgecompile.errors import RecipeError

    flavor = options.get("ops", "ivit")
    if flavor not in FLAVORS:
        raise RecipeError(f"int8-integer-only: ops must be one of {', '.join(FLAVORS)}, got '{flavor}'")
    choice = dict(FLAVORS[flavor])
    for kind, allowed in IMPLEMENTATIONS.items():
        if kind in options:
            if options[kind] not in allowed:
                raise RecipeError(
                    f"int8-integer-only: {kind} must be one of {', '.join(allowed)}, got '{options[kind]}'"
                )
            choice[kind] = options[kind]
    return choice
