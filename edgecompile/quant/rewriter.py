"""The walk of the int8 rewrite: how each tensor is held while ``main`` is rewritten
(:class:`Float`, :class:`Int8`, :class:`Acc`), the conversions between those forms, and the
:class:`Rewriter` that goes binding by binding, handing each layer to the handler its recipe's table
names (:mod:`edgecompile.quant.registry`) and emitting every other binding in float.

The rewriter knows no recipe: the handlers (:mod:`edgecompile.quant.int8`,
:mod:`edgecompile.quant.integer_only`) emit the layers, through the conversions here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from tvm import relax

from edgecompile import intref
from edgecompile.ir.layers import LAYOUT_OPS, Layer, nonnegative_vars
from edgecompile.ir.ops import const_array, op_name, scalar_f32
from edgecompile.ir.walk import bindings, emit_binding, substitute
from edgecompile.quant import emit as iop
from edgecompile.quant.options import NONLINEAR_KINDS

P_BITS = 15  # probabilities read by a matmul: int16 [0, 2^15 - 1] at 2^-15 (Rewriter.as_probabilities)
P_LEVELS = 1 << P_BITS


@dataclass(frozen=True)
class Float:
    """A float32 tensor."""

    expr: relax.Expr


@dataclass(frozen=True)
class Int8:
    """An int8 tensor at one scale for the whole tensor: ``x ~ scale * expr``."""

    expr: relax.Expr | None  # None in a form (Rewriter.form): how a tensor was held, without its value
    scale: float


@dataclass(frozen=True)
class Acc:
    """An int32 tensor ``x ~ scale * expr``: the accumulator of a linear layer or matmul (per output
    channel after a linear layer), or an integer-only op's output. An integer op reading it as int8
    gets it requantized to the calibrated ``out_scale``; a float op reads ``float(expr) * scale``
    directly, skipping the int8 rounding. ``narrow``: its values fit 16 bits (an integer-only
    LayerNorm reads it as it is)."""

    expr: relax.Expr | None  # None in a form (Rewriter.form)
    scale: float | np.ndarray
    out_scale: float
    narrow: bool = False


# Emits a layer in integers: its output into ``rewriter.env``, its scales into ``layer.info``; False
# leaves the layer float. The recipes' tables of them: :mod:`edgecompile.quant.registry`.
Handler = Callable[["Rewriter", Layer], bool]


def rescale(x: relax.Expr, ratio) -> relax.Expr:
    """:func:`edgecompile.intref.rescale` by the dyadic form of ``ratio``: int64, unclipped.
    A negative ratio (a LayerNorm channel with a negative gamma) negates the multiplier."""
    ratio = np.asarray(ratio, np.float64)
    b, c = intref.dyadic(np.abs(ratio))
    b = np.where(ratio < 0, -b, b).astype(np.int64)
    y = relax.op.multiply(relax.op.astype(x, "int64"), relax.const(b, "int64"))
    y = relax.op.add(y, relax.const(np.int64(1) << (c - 1), "int64"))
    return relax.op.right_shift(y, relax.const(c, "int64"))


def requantize(acc: relax.Expr, ratio, dyadic: bool) -> relax.Expr:
    """An int32 ``acc`` to int8 at ``ratio`` (scalar or per channel along the last axis):
    :func:`edgecompile.intref.requantize` of the dyadic form, or
    :func:`edgecompile.intref.requantize_f32` (one float32 multiply, in 32-bit lanes)."""
    if dyadic:
        y = rescale(acc, ratio)
    else:
        m = relax.const(np.asarray(ratio, np.float32), "float32")
        y = relax.op.round(relax.op.multiply(relax.op.astype(acc, "float32"), m))
    return relax.op.astype(relax.op.clip(y, -128, 127), "int8")


class Rewriter:
    """Emits the rewrite of one function into ``bb``. ``env`` maps each original var to how it is
    held now (:class:`Float`, :class:`Int8` or :class:`Acc`). A layer goes to
    ``handlers[layer.kind]`` (a :data:`Handler`; False or no handler: it stays float); ``nonlinear``
    (integer-only: op -> implementation) says which integer nonlinear the handlers emit,
    ``smooth`` maps linear inputs to ``(sigma, threshold of x / sigma)``
    (:func:`edgecompile.quant.smooth.smoothing_factors`), ``maxima`` the largest ``|x|``
    calibration saw per var."""

    def __init__(
        self,
        bb: relax.BlockBuilder,
        thresholds: dict,
        layers: list[Layer],
        keep_float,
        handlers: dict[str, Handler],
        nonlinear: dict[str, str] | None = None,
        smooth: dict | None = None,
        maxima: dict | None = None,
        dynamic=(),
        moments: dict | None = None,
        wide=(),
    ):
        self.bb = bb
        self.scale = {v: t / 127.0 for v, t in thresholds.items()}
        self.handlers = handlers
        self.impl = dict(nonlinear or {})  # op kind -> implementation; a layer name -> its own (impl_of)
        self.integer_only = bool(nonlinear)
        self.smooth: dict = smooth or {}  # linear input var -> (sigma, threshold of x / sigma)
        self.maxima: dict = maxima or {}  # var -> largest |x| seen in calibration
        # linear input var -> its InputMoments (edgecompile.quant.rounding): bias correction, GPTQ
        self.moments: dict = moments or {}
        self.nonneg: set = set()  # values in [0, 1]: edgecompile.ir.layers.nonnegative_vars
        self.activations: set = set()  # layer outputs and what is computed from them (Rewriter.walk)
        self.nans: dict = {}  # isnan(x) of an integer x -> x
        self.env: dict = {}
        self.fcache: dict = {}
        self.qcache: dict = {}
        self.layers = {layer.binding.var: layer for layer in layers}
        self.bias_of = {layer.bias_binding.var: layer for layer in layers if layer.bias_binding is not None}
        self.gelu_of = {v: layer for layer in layers if layer.kind == "gelu" for v in layer.region.interior}
        self.keep = tuple(keep_float)
        self.dynamic = frozenset(dynamic)  # names of the layers whose activations get run-time scales
        self.wide = frozenset(wide)  # names of the linear layers reading int16 activations (int8:a16=)
        self.float_feeds: set = set()  # vars the dynamic layers read, through layout ops (walk fills it)
        # per rewritten layer, the form (Rewriter.form) of each integer input it read; per-layer
        # sensitivity rebuilds these from float values (edgecompile.quant.layer_switch)
        self.forms: dict[str, dict] = {}

    def is_float(self, v) -> bool:
        """``v`` is held in float (or not held: a parameter, a constant)."""
        return not isinstance(self.env.get(v), (Int8, Acc))

    def form(self, v) -> Int8 | Acc | None:
        """How ``v`` is held now, without its expression; None where it is float."""
        e = self.env.get(v)
        return None if e is None or isinstance(e, Float) else replace(e, expr=None)

    # -- conversions -------------------------------------------------------------------------
    def as_float(self, v):
        e = self.env.get(v)
        if e is None or isinstance(e, Float):
            return v if e is None else e.expr
        if v not in self.fcache:
            scale = np.asarray(e.scale, np.float32)
            deq = relax.op.multiply(relax.op.astype(e.expr, "float32"), relax.const(scale, "float32"))
            self.fcache[v] = self.bb.emit(deq, name_hint=f"{v.name}_deq")
        return self.fcache[v]

    def as_quant(self, v):
        """``(int8 expr, scale)``: an int32 ``v`` requantized to its calibrated scale, a float one quantized."""
        e = self.env.get(v)
        if isinstance(e, Int8):
            return e.expr, e.scale
        if v not in self.qcache:
            if isinstance(e, Acc):
                q = self.requant(e.expr, np.asarray(e.scale, np.float64) / e.out_scale, f"{v.name}_q")
                self.qcache[v] = (q, e.out_scale)
            else:
                s = self.scale[v]
                x = relax.op.multiply(self.as_float(v), relax.const(np.float32(1.0 / np.float32(s))))
                q = relax.op.astype(relax.op.clip(relax.op.round(x), -128, 127), "int8")
                self.qcache[v] = (self.bb.emit(q, name_hint=f"{v.name}_q"), s)
        return self.qcache[v]

    def as_quant_smoothed(self, v):
        """``v / sigma`` as int8 for the linear layers reading ``v``
        (:func:`edgecompile.quant.smooth.smoothing_factors`): ``(int8 expr, scale, sigma)``; sigma
        is None where ``v`` is not smoothed or is int8 already."""
        e = self.env.get(v)
        if v not in self.smooth or isinstance(e, Int8):
            q, s = self.as_quant(v)
            return q, s, None
        key = (v, "smoothed")
        if key not in self.qcache:
            sigma, t = self.smooth[v]
            s = t / 127.0
            if isinstance(e, Acc):
                q = self.requant(e.expr, np.asarray(e.scale, np.float64) / (s * sigma), f"{v.name}_sq")
            else:
                x = relax.op.multiply(self.as_float(v), relax.const((1.0 / (s * sigma)).astype(np.float32)))
                q = self.bb.emit(
                    relax.op.astype(relax.op.clip(relax.op.round(x), -128, 127), "int8"), name_hint=f"{v.name}_sq"
                )
            self.qcache[key] = (q, s, sigma)
        return self.qcache[key]

    def as_probabilities(self, v):
        """``(int16 expr, 2^-15)`` for a tensor of probabilities in ``[0, 1]`` (a softmax output):
        ``[0, 32767]`` at ``2^-15``, so the ``P V`` matmul reading it keeps the small
        probabilities an 8-bit P rounds away (a row over 257 tokens averages 1/257, one 8-bit
        step). The accumulator cannot overflow: a row of P sums to about ``2^15``, so
        ``|sum_k P_k V_k| <= 2^15 * 127``. None where ``v`` is not such a tensor or is int8 already."""
        e = self.env.get(v)
        if v not in self.nonneg or isinstance(e, Int8):
            return None
        key = (v, "probabilities")
        if key not in self.qcache:
            if isinstance(e, Acc):  # integer-only softmax: [0, 2^15 - 1] at 2^-15 already
                q = relax.op.astype(e.expr, "int16")
            else:
                x = relax.op.multiply(self.as_float(v), relax.const(np.float32(P_LEVELS)))
                q = relax.op.astype(relax.op.clip(relax.op.round(x), 0, P_LEVELS - 1), "int16")
            self.qcache[key] = (self.bb.emit(q, name_hint=f"{v.name}_p"), 1.0 / P_LEVELS)
        return self.qcache[key]

    def impl_of(self, layer: Layer) -> str:
        """The integer implementation of a nonlinear ``layer`` (ivit | ibert): its own where the
        ``nonlinear`` map names the layer (the accuracy budget's per-layer choice,
        :mod:`edgecompile.quant.budget`), else its kind's."""
        return self.impl.get(layer.name, self.impl[layer.kind])

    def is_dynamic(self, layer: Layer) -> bool:
        """``layer`` quantizes its activations with run-time scales (``int8:act=dynamic``): linear
        layers and matmuls in int8, linear layers in the integer-only recipe."""
        return layer.name in self.dynamic and layer.kind in (("linear",) if self.integer_only else ("linear", "matmul"))

    def is_wide(self, layer: Layer) -> bool:
        """``layer`` reads its input as int16 (``int8:a16=``): linear layers, in both recipes."""
        return layer.name in self.wide and layer.kind == "linear"

    def as_wide(self, v):
        """``(int32 expr, scale)``: ``v`` as integers in ``[-WIDE_MAX, WIDE_MAX]`` at ``max|x| /
        WIDE_MAX`` from calibration (:mod:`edgecompile.intref.wide`), from its integers by a dyadic
        rescale (integer-only stays integer) or quantized from float. None where ``v`` is held per
        channel or was not calibrated: the int8 path serves it."""
        e = self.env.get(v)
        floating = e is None or isinstance(e, Float)
        if v not in self.maxima or (not floating and np.ndim(e.scale) != 0):
            return None
        key = (v, "wide")
        if key not in self.qcache:
            s = max(float(self.maxima[v]), 1e-30) / intref.WIDE_MAX
            if not floating:
                z = relax.op.clip(rescale(e.expr, np.float64(e.scale) / s), -intref.WIDE_MAX, intref.WIDE_MAX)
            elif self.integer_only:
                z = iop.emit_input_quantize(self.bb, self.as_float(v), 1.0 / np.float32(s), intref.WIDE_MAX)
            else:
                x = relax.op.multiply(self.as_float(v), relax.const(np.float32(1.0 / np.float32(s))))
                z = relax.op.clip(relax.op.round(x), -intref.WIDE_MAX, intref.WIDE_MAX)
            self.qcache[key] = (self.bb.emit(relax.op.astype(z, "int32"), name_hint=f"{v.name}_w"), s)
        return self.qcache[key]

    def as_dynamic(self, v, axis: int = -1, smoothed: bool = False, weights=None):
        """``(int8 expr, float32 scale expr, sigma)``: ``v`` (divided by its smoothing factors where
        ``smoothed`` and calibration chose them; sigma None otherwise) quantized with a scale per
        slice along ``axis``, from that slice's own max ``|x|`` at run time
        (:func:`edgecompile.intref.dynamic_quantize`). ``weights``: the int16 probabilities a
        ``P V`` reads ``v`` (its keys along ``axis = -2``) with; a key no query gives a nonzero
        probability (masked, or padded by a ranged artifact) then does not widen its column's
        scale, so padding leaves the answer unchanged and the scale covers the values that count."""
        sigma = self.smooth[v][0] if smoothed and v in self.smooth else None
        key = (v, "dynamic", axis, sigma is not None, weights)
        if key not in self.qcache:
            x = self.as_float(v)
            if sigma is not None:
                x = relax.op.multiply(x, relax.const((1.0 / sigma).astype(np.float32)))
            x = self.bb.emit(x, name_hint=f"{v.name}_x") if sigma is not None else x
            magnitude = relax.op.abs(x)
            if weights is not None:
                used = relax.op.greater(relax.op.max(weights, axis=[-2]), relax.const(0, "int16"))
                used = self.bb.emit(relax.op.expand_dims(used, -1), name_hint=f"{v.name}_used")
                magnitude = relax.op.where(used, magnitude, relax.const(np.float32(0)))
            peak = relax.op.max(magnitude, axis=[axis], keepdims=True)
            amax = self.bb.emit(relax.op.maximum(peak, relax.const(intref.TINY)), name_hint=f"{v.name}_amax")
            inv = relax.op.divide(relax.const(np.float32(127)), amax)
            q = relax.op.astype(relax.op.clip(relax.op.round(relax.op.multiply(x, inv)), -127, 127), "int8")
            scale = relax.op.divide(amax, relax.const(np.float32(127)))
            self.qcache[key] = (
                self.bb.emit(q, name_hint=f"{v.name}_dq"), self.bb.emit(scale, name_hint=f"{v.name}_ds"), sigma
            )  # fmt: skip
        return self.qcache[key]

    def as_row_shifted(self, v, smoothed: bool = True):
        """Integer-only run-time row scales: ``(int8 expr, int64 shift per row, scale, sigma)``
        with ``v ~ scale * 2^shift * q`` (:func:`edgecompile.intref.row_shift_quantize`); ``v``
        is read at its integer scale (divided by its smoothing factors where calibration chose
        them, as ``rescale(x, 2^8 / sigma)``); a float ``v`` (a model input) through the input
        quantize at 2^-16 of its calibrated int8 step, so values up to 2^14 / 127 times its
        calibrated range stay exact to that step. None where ``v`` is per channel or uncalibrated:
        the static path serves it."""
        e = self.env.get(v)
        floating = e is None or isinstance(e, Float)
        if (floating and v not in self.scale) or (not floating and np.ndim(e.scale) != 0):
            return None
        sigma = self.smooth[v][0] if smoothed and v in self.smooth and not floating else None
        key = (v, "row_shift", sigma is not None)
        if key not in self.qcache:
            if floating:
                scale = self.scale[v] / 2**16
                z = iop.emit_input_quantize(self.bb, self.as_float(v), 1.0 / np.float32(scale), 2**30)
                z = relax.op.astype(z, "int64")
            else:
                z, scale = relax.op.astype(e.expr, "int64"), float(e.scale)
            if sigma is not None:
                z, scale = rescale(e.expr, 256.0 / sigma), scale / 256.0
            z = self.bb.emit(z, name_hint=f"{v.name}_z")
            peak = relax.op.max(relax.op.abs(z), axis=[-1], keepdims=True)
            steps = np.int64(255) << np.arange(intref.SHIFT_STEPS, dtype=np.int64)
            over = relax.op.greater_equal(relax.op.expand_dims(relax.op.multiply(peak, relax.const(2, "int64")), -1),
                                          relax.const(steps, "int64"))  # fmt: skip
            shift = self.bb.emit(relax.op.sum(relax.op.astype(over, "int64"), axis=[-1]), name_hint=f"{v.name}_shift")
            one = relax.const(1, "int64")
            half = relax.op.right_shift(relax.op.left_shift(one, shift), one)
            q = relax.op.clip(relax.op.right_shift(relax.op.add(z, half), shift), -127, 127)
            self.qcache[key] = (self.bb.emit(relax.op.astype(q, "int8"), name_hint=f"{v.name}_rq"), shift, scale, sigma)
        return self.qcache[key]

    def as_int(self, v, narrow: bool = False):
        """``(expr, scale)``: ``v`` as integers at one scale for the whole tensor (int8, or an int32
        at one scale, within 16 bits if ``narrow``)."""
        e = self.env.get(v)
        if isinstance(e, Acc) and np.ndim(e.scale) == 0 and (not narrow or e.narrow):
            return e.expr, float(e.scale)
        return self.as_quant(v)

    def to_scale(self, x, s_out: float, limit: int = 2**30) -> relax.Expr:
        """``x`` (an integer tensor, a constant or a float tensor) as int64 at ``s_out``."""
        c = const_array(x)
        if c is not None:
            return relax.const(np.clip(np.rint(c.astype(np.float64) / s_out), -limit, limit).astype(np.int64), "int64")
        e = self.env.get(x)
        if isinstance(e, Int8):
            return rescale(e.expr, np.float64(e.scale) / s_out)
        if isinstance(e, Acc):
            return rescale(e.expr, np.asarray(e.scale, np.float64) / s_out)
        # a float tensor computed from the inputs (an attention mask): quantized in a kernel of its
        # own, so its float arithmetic is not fused into the integer kernel that reads it
        q = iop.emit_input_quantize(self.bb, self.as_float(x), 1.0 / np.float32(s_out), limit)
        return relax.op.astype(q, "int64")

    def requant(self, acc, ratio, name):
        """``acc`` requantized to int8 by ``ratio``: the dyadic integer form in the integer-only
        recipe, the float form (:func:`edgecompile.intref.requantize_f32`) in the int8 recipe."""
        return self.bb.emit(requantize(acc, ratio, dyadic=self.integer_only), name_hint=name)

    def set_acc(self, layer: Layer, y: relax.Expr, scale, narrow: bool = False) -> None:
        """The layer's output is the int32 ``y`` at ``scale``."""
        self.env[layer.output] = Acc(self.bb.emit(y, name_hint=layer.name), scale, self.scale[layer.output], narrow)

    # -- the walk ------------------------------------------------------------------------------
    def walk(self, func: relax.Function, params: list[relax.Var]) -> relax.Expr:
        """Rewrite the bindings of ``func``, whose parameters are ``params`` now; its result, in float."""
        self.env.update({p: Float(n) for p, n in zip(func.params, params)})
        self.nonneg = nonnegative_vars(func)
        self.activations = _activations(func, self.layers)
        if not self.integer_only:  # integer-only dynamic layers read integers (as_row_shifted)
            wider = [la for la in self.layers.values() if self.is_dynamic(la) or self.is_wide(la)]
            self.float_feeds = _float_feeds(func, wider)
        for b in bindings(func):
            self.binding(b)
        ret = func.body.body
        return substitute(ret, {u: self.as_float(u) for u in relax.analysis.free_vars(ret)})

    def kept(self, layer: Layer) -> bool:
        return layer.matches(self.keep)

    def handler(self, layer: Layer) -> Handler | None:
        """What emits ``layer`` in integers; None leaves it float: kept by ``keep_float``, a kind the
        recipe's table has no handler for (a nonlinear it keeps in float), or a nonlinear whose
        input is float."""
        if self.kept(layer) or (layer.kind in NONLINEAR_KINDS and self.is_float(layer.inputs[0])):
            return None
        return self.handlers.get(layer.kind)

    def rewrite(self, layer: Layer) -> bool:
        """Emit ``layer`` in integers; False leaves it to the float path."""
        handler = self.handler(layer)
        return handler is not None and handler(self, layer)

    def binding(self, b: relax.VarBinding) -> None:
        done = (
            self.int32_layout(b)
            or self.nan_guard(b)
            or self.layer_binding(b)
            or self.skipped(b.var)
            or self.integer_passthrough(b)
        )
        if not done:
            mapping = {u: self.as_float(u) for u in relax.analysis.free_vars(b.value) if u in self.env}
            self.env[b.var] = Float(emit_binding(self.bb, b, substitute(b.value, mapping)))

    def layer_binding(self, b: relax.VarBinding) -> bool:
        """A layer, emitted by its handler (the forms of its inputs recorded in :attr:`forms`)."""
        layer = self.layers.get(b.var)
        if layer is None or self.kept(layer):
            return False
        forms = {x: f for x in layer.inputs if (f := self.form(x)) is not None}
        if not self.rewrite(layer):
            return False
        self.forms[layer.name] = forms
        return True

    def skipped(self, v) -> bool:
        """Bindings whose value another rewrite already covers: a bias folded into its linear
        layer, the inside of a GELU emitted whole."""
        gelu = self.gelu_of.get(v)
        if gelu is not None and self.handler(gelu) is not None:
            return True
        return v in self.bias_of and not self.kept(self.bias_of[v])

    def int32_layout(self, b: relax.VarBinding) -> bool:
        """Integer-only: a layout op moves an int32 tensor at one scale as it is."""
        v, value = b.var, b.value
        if not self.integer_only or v in self.layers or op_name(value) not in LAYOUT_OPS:
            return False
        e = self.env.get(value.args[0]) if isinstance(value.args[0], relax.Var) else None
        if not isinstance(e, Acc) or np.ndim(e.scale) != 0:
            return False
        new = relax.Call(value.op, [e.expr, *value.args[1:]], value.attrs, value.ty_args)
        self.env[v] = Acc(self.bb.emit(new, name_hint=v.name), e.scale, e.out_scale, e.narrow)
        return True

    def nan_guard(self, b: relax.VarBinding) -> bool:
        """Exporters guard attention against all-masked rows with ``where(isnan(P), 0, P)``: an
        integer tensor is never NaN, so the guard is the tensor itself (no float kernel); a float
        one stays."""
        v, value, name = b.var, b.value, op_name(b.value)
        if name == "relax.isnan" and isinstance(value.args[0], relax.Var) and not self.is_float(value.args[0]):
            shape = [int(d) for d in v.ty.shape.values]
            self.env[v] = Float(self.bb.emit(relax.op.zeros(shape, "bool"), name_hint=v.name))
            self.nans[v] = value.args[0]
            return True
        if name != "relax.where" or scalar_f32(value.args[1]) != 0.0 or not isinstance(value.args[2], relax.Var):
            return False
        x = value.args[2]
        if self.nans.get(value.args[0]) is not None and self.nans[value.args[0]].same_as(x):
            self.env[v] = self.env[x]
            return True
        return False

    def integer_passthrough(self, b: relax.VarBinding) -> bool:
        """An integer tensor through a multiply or divide by a positive constant scalar (only its
        scale changes), a layout op or ReLU (in int8)."""
        v, value, op = b.var, b.value, op_name(b.value)
        if not op or not isinstance(value.args[0], relax.Var) or self.is_float(value.args[0]):
            return False
        x = value.args[0]
        c = scalar_f32(value.args[1]) if op in ("relax.multiply", "relax.divide") else None
        if c is not None and c > 0:
            f = c if op == "relax.multiply" else 1.0 / c
            e = self.env[x]
            self.env[v] = (
                Int8(e.expr, e.scale * f) if isinstance(e, Int8) else Acc(e.expr, e.scale * f, e.out_scale * f)
            )
            return True
        if op in LAYOUT_OPS and v in self.float_feeds:
            return False  # a dynamic layer reads it: moved in float, quantized by that layer's own scales
        e = self.env[x]
        if op == "relax.nn.relu" and self.integer_only and isinstance(e, Acc) and np.ndim(e.scale) == 0:
            y = self.bb.emit(relax.op.maximum(e.expr, relax.const(0, str(e.expr.ty.dtype))), name_hint=v.name)
            self.env[v] = Acc(y, e.scale, e.out_scale, e.narrow)  # int32 as it is: no requantize to int8
            return True
        if op in LAYOUT_OPS or op == "relax.nn.relu":
            q, s = self.as_quant(x)
            if op == "relax.nn.relu":
                new = relax.op.maximum(q, relax.const(0, "int8"))
            else:
                new = relax.Call(value.op, [q, *value.args[1:]], value.attrs, value.ty_args)
            self.env[v] = Int8(self.bb.emit(new, name_hint=v.name), s)
            return True
        return False


def _activations(func: relax.Function, outputs) -> set:
    """The layers' ``outputs`` and every tensor computed from one: what a float operand of an
    integer add is when it is not an additive mask computed from the model's inputs alone."""
    out = set(outputs)
    for b in bindings(func):
        if any(v in out for v in relax.analysis.free_vars(b.value)):
            out.add(b.var)
    return out


def _float_feeds(func: relax.Function, dynamic: list[Layer]) -> set:
    """The inputs of the ``dynamic`` layers and the tensors layout ops turn into them: an integer
    tensor on such a path moves in float (exactly dequantized), not requantized to a static scale
    that would cost the dynamic layer its range."""
    wanted = {x for layer in dynamic for x in layer.inputs}
    for b in reversed(list(bindings(func))):
        if b.var in wanted and op_name(b.value) in LAYOUT_OPS and isinstance(b.value.args[0], relax.Var):
            wanted.add(b.value.args[0])
    return wanted
