"""int8 post-training quantization of a Relax model: integer linear layers with dyadic requantization.

The pass walks ``main`` binding by binding, tracking for every tensor whether it is float or
int8 with a per-tensor scale (``x ~ S * q``), and emits:

- ``linear.N`` — ``matmul(x, W)`` with a constant ``W`` (and a constant bias added after it):
  int8 ``x``, int8 ``W`` symmetric per output channel, int32 accumulation plus an int32 bias at
  scale ``S_x * S_w[c]``, then dyadic requantization per channel to an int8 output at the scale
  calibrated for that output — where an integer op reads it; a float op (GELU, a residual add
  into a float LayerNorm, a masked softmax) reads the int32 accumulator dequantized instead
  (``float(acc) * S_x * S_w[c]``), which is cheaper and skips a rounding;
- ``matmul.N`` — a matmul of two activations (attention's ``Q K^T`` and ``P V``): both int8,
  int32 accumulation, then the same choice of dyadic requantization or dequantization;
- ``add.N`` — an add of two int8 tensors: each requantized to the output scale, summed, saturated;
- ``embedding.N`` — a gather from a constant table (token embeddings): the table is stored int8
  with a scale per row, gathered rows are dequantized (4x smaller tables, float output);
- on int8 tensors, layout ops (reshape, permute_dims, ...) and ReLU stay in int8, and a multiply or
  divide by a positive constant scalar only changes the scale (no code);
- every other op (softmax, GELU, LayerNorm, masks, ...) runs in float: its int8 inputs are
  dequantized, and its output is quantized again where an integer op consumes it.

So inputs are quantized once where a linear layer first reads them, and outputs dequantized once.
Scales of activations come from calibration (:mod:`edgecompile.calibrate`); the integer
semantics are those of :mod:`edgecompile.intref`, which the compiled code matches bit for bit.
Layer names are the kind and its index in graph order (``linear.0``, ``matmul.3``, ``add.1``);
``keep_float`` takes names or fnmatch patterns of layers to leave in float.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant

from edgecompile import intref
from edgecompile.ir.walk import bindings, emit_binding, substitute

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


@dataclass(frozen=True)
class QuantConfig:
    """Options of the ``int8`` recipe."""

    observer: str = "percentile"
    percentile: float = 99.99
    samples: int | None = None  # calibration samples to use (None: all given)
    keep_float: tuple[str, ...] = ()
    # integer-only recipes: op -> implementation ("ivit" | "ibert" | "float") for softmax, gelu,
    # layernorm, tanh (see :mod:`edgecompile.quant.integer_only`); empty for ``int8``
    nonlinear: tuple[tuple[str, str], ...] = ()
    # SmoothQuant's migration strength alpha (None: chosen per tensor; 0: off), see
    # :func:`smoothing_factors`
    smooth: float | None = None

    @property
    def integer_only(self) -> bool:
        return bool(self.nonlinear)


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


def op_name(value) -> str:
    """The operator name of a call binding's value ('' for anything else)."""
    return getattr(getattr(value, "op", None), "name", "") if isinstance(value, relax.Call) else ""


def _is_float_var(e) -> bool:
    return isinstance(e, relax.Var) and isinstance(e.ty, relax.TensorType) and str(e.ty.dtype) == "float32"


def _const_array(e) -> np.ndarray | None:
    return e.value.numpy() if isinstance(e, Constant) else None


def _scalar_const(e) -> float | None:
    a = _const_array(e)
    if a is None or a.size != 1 or a.dtype != np.float32:
        return None
    return float(a.reshape(()))


def find_layers(func: relax.Function, integer_only: bool = False) -> list[Layer]:
    """The quantizable ops of ``func`` in graph order, with their names; ``integer_only`` adds the
    nonlinears, concats and adds with a constant or a float operand
    (:func:`edgecompile.quant.integer_only.find_nonlinear_layers`)."""
    layers = _linear_layers(func)
    if integer_only:
        from edgecompile.quant.integer_only import find_nonlinear_layers

        layers = find_nonlinear_layers(func, layers)
    return layers


def _linear_layers(func: relax.Function) -> list[Layer]:
    binds = list(bindings(func))
    uses: dict = {}
    for b in binds:
        for v in relax.analysis.free_vars(b.value) if not isinstance(b.value, relax.Var) else [b.value]:
            uses.setdefault(v, []).append(b)
    for v in relax.analysis.free_vars(func.body.body):
        uses.setdefault(v, []).append(None)
    layers, counts = [], {"linear": 0, "matmul": 0, "add": 0, "embedding": 0}

    def name(kind):
        counts[kind] += 1
        return f"{kind}.{counts[kind] - 1}"

    for b in binds:
        op, v = op_name(b.value), b.value
        if op == "relax.matmul" and _is_float_var(v.args[0]):
            w = _const_array(v.args[1])
            if w is not None and w.ndim == 2 and w.dtype == np.float32:
                bias_b = None
                users = uses.get(b.var, [])
                if len(users) == 1 and users[0] is not None and op_name(users[0].value) == "relax.add":
                    other = [a for a in users[0].value.args if not a.same_as(b.var)]
                    bias = _const_array(other[0]) if len(other) == 1 else None
                    if bias is not None and bias.dtype == np.float32 and bias.size == w.shape[1]:
                        if bias.shape[-1] == w.shape[1]:
                            bias_b = users[0]
                out = bias_b.var if bias_b is not None else b.var
                layers.append(Layer(name("linear"), "linear", b, out, (v.args[0],), bias_b))
            elif _is_float_var(v.args[1]):
                layers.append(Layer(name("matmul"), "matmul", b, b.var, (v.args[0], v.args[1])))
        elif op == "relax.take" and int(v.attrs.axis) == 0:
            table = _const_array(v.args[0])
            if table is not None and table.ndim == 2 and table.dtype == np.float32 and table.size >= EMBEDDING_MIN:
                layers.append(Layer(name("embedding"), "embedding", b, b.var, ()))
        elif op == "relax.add" and all(_is_float_var(a) for a in v.args):
            if tuple(v.args[0].ty.shape.values) and len(v.args[0].ty.shape.values) == len(v.args[1].ty.shape.values):
                layers.append(Layer(name("add"), "add", b, b.var, (v.args[0], v.args[1])))
    return layers


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


ALPHAS = (0.25, 0.5, 0.75, 0.9, 1.0)  # the strengths smooth=auto weighs against no smoothing
SMOOTH_GAIN = 2.0  # smooth=auto smooths where the predicted output noise falls at least this much
SMOOTH_MIN_ROWS = 512  # ... and calibration saw this many rows (tokens) of the tensor


def smoothing_factors(stats, readers: list[Layer], alpha: float | None) -> np.ndarray | None:
    """SmoothQuant (Xiao et al., 2023): per input channel ``j`` of the linear layers reading one
    tensor, ``sigma_j = max|x_j|^alpha / max|W_j|^(1 - alpha)``; the layers read ``x / sigma`` (one
    int8 scale) and use weights ``diag(sigma) W``, the same product in float. Real transformers
    have a few channels 10-50x larger than the rest (all-MiniLM-L6-v2's LayerNorm outputs: 30
    against a spread of 0.6), so one per-tensor scale leaves the other channels a few levels;
    dividing them out moves the range into the weights, quantized per output channel.

    ``alpha=None`` (``smooth=auto``) picks, per tensor, the strength in :data:`ALPHAS` with the
    least predicted output noise, if it beats no smoothing (None) by :data:`SMOOTH_GAIN` and
    calibration saw :data:`SMOOTH_MIN_ROWS` rows: activation rounding
    ``(T/127)^2/12 * sum_j sigma_j^2 W_jc^2`` (``T = max_j max|x_j| / sigma_j``) plus weight
    rounding ``(max_j |sigma_j W_jc| / 127)^2 / 12 * sum_j E[x_j^2] / sigma_j^2``, summed over the
    outputs ``c``, from the calibration statistics ``stats``
    (:class:`edgecompile.calibrate.capture.ChannelStats`). On MiniLM that is 0.9-1.0 for most
    tensors; on a model without outlier channels, none."""
    w = np.concatenate([_const_array(layer.binding.value.args[1]) for layer in readers], axis=1).astype(np.float64)
    wmax = np.maximum(np.abs(w).max(axis=1), 1e-8)
    amax = np.maximum(stats.max.astype(np.float64), 1e-8)

    def sigma_of(a: float) -> np.ndarray:
        sigma = amax**a / wmax ** (1 - a)
        return np.clip(sigma / np.exp(np.log(sigma).mean()), 1e-4, 1e4)  # geometric mean 1

    if alpha is not None:
        return sigma_of(alpha)
    if stats.count < SMOOTH_MIN_ROWS:  # a channel's maximum over a few tokens says little
        return None
    ms, w2 = stats.mean_square, w**2

    def noise(sigma: np.ndarray) -> float:
        t = (amax / sigma).max()
        act = (t / 127) ** 2 / 12 * (sigma**2 @ w2).sum()
        step_w = np.abs(sigma[:, None] * w).max(axis=0) / 127
        return float(act + (step_w**2 / 12).sum() * (ms / sigma**2).sum())

    best = min((sigma_of(a) for a in ALPHAS), key=noise)
    # smoothing fits every channel's range to what calibration saw, leaving none of the headroom
    # the largest channel gave the others: only worth it for a clear gain (3 dB predicted)
    return best if noise(best) < noise(np.ones_like(amax)) / SMOOTH_GAIN else None


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
        elif name == "relax.where" and _scalar_const(value.args[1]) == 0.0 and value.args[2] in out:
            out.add(b.var)
    return out


def _weight_quant(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.abs(w).max(axis=0) / 127.0
    s = np.where(s > 0, s, 1.0).astype(np.float64)
    q = np.clip(np.rint(w / s), -127, 127).astype(np.int8)
    return q, s


class Rewriter:
    """Emits the rewrite. Each original var maps to one of
    ``("f", expr)`` float, ``("q", expr, S)`` int8 at scale S, or ``("acc", expr, S_acc, S_q)``
    the int32 accumulator of a linear/matmul (``x ~ S_acc * acc``, per channel for linear
    layers) that is requantized to int8 at the calibrated ``S_q`` only where an integer op reads
    it; a float op reads ``float(acc) * S_acc`` directly, skipping the int8 rounding."""

    def __init__(self, bb: relax.BlockBuilder, thresholds: dict, layers: list[Layer], keep_float, smooth=None):
        self.bb = bb
        self.scale = {v: t / 127.0 for v, t in thresholds.items()}
        self.smooth: dict = smooth or {}  # linear input var -> (sigma, threshold of x / sigma)
        self.nonneg: set = set()  # values in [0, 1]: :func:`nonnegative_vars`
        self.nans: dict = {}  # isnan(x) of an integer x -> x
        self.env: dict = {}
        self.fcache: dict = {}
        self.qcache: dict = {}
        self.layers = {layer.binding.var: layer for layer in layers}
        self.bias_of = {layer.bias_binding.var: layer for layer in layers if layer.bias_binding is not None}
        self.keep = tuple(keep_float)
        # per rewritten layer, the integer form of each input it read: ("q", S) or ("acc", S_acc,
        # S_q, narrow); per-layer sensitivity rebuilds these from float values
        # (:mod:`edgecompile.quant.layer_switch`)
        self.forms: dict[str, dict] = {}

    def kind(self, v) -> str:
        return self.env.get(v, ("f",))[0]

    # -- conversions -------------------------------------------------------------------------
    def as_float(self, v):
        e = self.env.get(v)
        if e is None or e[0] == "f":
            return v if e is None else e[1]
        if v not in self.fcache:
            scale = np.asarray(e[2], np.float32)
            deq = relax.op.multiply(relax.op.astype(e[1], "float32"), relax.const(scale, "float32"))
            self.fcache[v] = self.bb.emit(deq, name_hint=f"{v.name}_deq")
        return self.fcache[v]

    def as_quant(self, v):
        e = self.env.get(v)
        if e is not None and e[0] == "q":
            return e[1], e[2]
        if v not in self.qcache:
            if e is not None and e[0] == "acc":
                _, acc, s_acc, s_q = e
                self.qcache[v] = (self.requant(acc, np.asarray(s_acc, np.float64) / s_q, f"{v.name}_q"), s_q)
            else:
                s = self.scale[v]
                x = relax.op.multiply(self.as_float(v), relax.const(np.float32(1.0 / np.float32(s))))
                q = relax.op.astype(relax.op.clip(relax.op.round(x), -128, 127), "int8")
                self.qcache[v] = (self.bb.emit(q, name_hint=f"{v.name}_q"), s)
        return self.qcache[v]

    def as_quant_smoothed(self, v):
        """``v / sigma`` as int8 for the linear layers reading ``v`` (:func:`smoothing_factors`):
        ``(int8 expr, scale, sigma)``; sigma is all ones where ``v`` is int8 already."""
        e = self.env.get(v)
        if v not in self.smooth or (e is not None and e[0] == "q"):
            q, s = self.as_quant(v)
            return q, s, None
        key = (v, "smoothed")
        if key not in self.qcache:
            sigma, t = self.smooth[v]
            s = t / 127.0
            if e is not None and e[0] == "acc":
                q = self.requant(e[1], np.asarray(e[2], np.float64) / (s * sigma), f"{v.name}_sq")
            else:
                x = relax.op.multiply(self.as_float(v), relax.const((1.0 / (s * sigma)).astype(np.float32)))
                q = self.bb.emit(
                    relax.op.astype(relax.op.clip(relax.op.round(x), -128, 127), "int8"), name_hint=f"{v.name}_sq"
                )
            self.qcache[key] = (q, s, sigma)
        return self.qcache[key]

    @staticmethod
    def rescale(x, ratio):
        """:func:`edgecompile.intref.rescale` by the dyadic form of ``ratio``: int64, unclipped.
        A negative ratio (a LayerNorm channel with a negative gamma) negates the multiplier."""
        ratio = np.asarray(ratio, np.float64)
        b, c = intref.dyadic(np.abs(ratio))
        b = np.where(ratio < 0, -b, b).astype(np.int64)
        y = relax.op.multiply(relax.op.astype(x, "int64"), relax.const(b, "int64"))
        y = relax.op.add(y, relax.const(np.int64(1) << (c - 1), "int64"))
        return relax.op.right_shift(y, relax.const(c, "int64"))

    def requant(self, acc, ratio, name):
        y = relax.op.clip(self.rescale(acc, ratio), -128, 127)
        return self.bb.emit(relax.op.astype(y, "int8"), name_hint=name)

    # -- layers --------------------------------------------------------------------------------
    def kept(self, layer: Layer) -> bool:
        return any(fnmatch.fnmatchcase(layer.name, p) for p in self.keep)

    def linear(self, layer: Layer):
        call = layer.binding.value
        xq, sx, sigma = self.as_quant_smoothed(call.args[0])
        w = _const_array(call.args[1])
        wq, sw = _weight_quant(w if sigma is None else (w * sigma[:, None]).astype(np.float32))
        acc = self.bb.emit(
            relax.op.matmul(xq, relax.const(wq, "int8"), out_dtype="int32"), name_hint=f"{layer.name}_acc"
        )
        if layer.bias_binding is not None:
            (bias,) = [_const_array(a) for a in layer.bias_binding.value.args if isinstance(a, Constant)]
            bq = np.clip(np.rint(bias.reshape(-1) / (sx * sw)), -(2**31), 2**31 - 1).astype(np.int32)
            acc = self.bb.emit(relax.op.add(acc, relax.const(bq, "int32")), name_hint=f"{layer.name}_bias")
        sy = self.scale[layer.output]
        self.env[layer.output] = ("acc", acc, sx * sw, sy)
        layer.info = {
            "scale_in": sx,
            "scale_out": sy,
            "weight_scale_min": float(sw.min()),
            "weight_scale_max": float(sw.max()),
            **({"smoothing": [float(sigma.min()), float(sigma.max())]} if sigma is not None else {}),
        }

    def as_unsigned(self, v):
        """``(u - 128 as int8, scale)`` for a tensor of probabilities in ``[0, 1]`` (softmax): all
        256 levels on ``[0, max]``, twice the resolution of int8 at zero point 0; the matmul
        reading it adds ``128 * sum_k B[k, :]`` back. None where ``v`` is int8 already."""
        e = self.env.get(v)
        if v not in self.nonneg or (e is not None and e[0] == "q"):
            return None
        key = (v, "unsigned")
        if key not in self.qcache:
            if e is not None and e[0] == "acc":  # integer-only softmax: [0, 255] at 2^-8
                q = relax.op.astype(relax.op.subtract(e[1], relax.const(np.int32(128))), "int8")
                self.qcache[key] = (self.bb.emit(q, name_hint=f"{v.name}_u"), float(e[2]))
            else:
                s = self.scale[v] * 127.0 / 255.0
                x = relax.op.multiply(self.as_float(v), relax.const(np.float32(1.0 / np.float32(s))))
                x = relax.op.subtract(relax.op.clip(relax.op.round(x), 0, 255), relax.const(np.float32(128)))
                self.qcache[key] = (self.bb.emit(relax.op.astype(x, "int8"), name_hint=f"{v.name}_u"), s)
        return self.qcache[key]

    def matmul(self, layer: Layer):
        unsigned = self.as_unsigned(layer.inputs[0])
        (aq, sa), (bq, sb) = unsigned or self.as_quant(layer.inputs[0]), self.as_quant(layer.inputs[1])
        acc = relax.op.matmul(aq, bq, out_dtype="int32")
        if unsigned is not None:
            zero = relax.op.sum(relax.op.astype(bq, "int32"), axis=[-2], keepdims=True)
            acc = relax.op.add(acc, relax.op.multiply(zero, relax.const(np.int32(128))))
        acc = self.bb.emit(acc, name_hint=f"{layer.name}_acc")
        sy = self.scale[layer.output]
        self.env[layer.output] = ("acc", acc, np.float64(sa) * sb, sy)
        layer.info = {"scale_in": [sa, sb], "scale_out": sy}

    def embedding(self, layer: Layer):
        call = layer.binding.value
        table = _const_array(call.args[0])
        s = np.abs(table).max(axis=1) / 127.0
        s = np.where(s > 0, s, 1.0).astype(np.float32)
        q = np.clip(np.rint(table / s[:, None]), -127, 127).astype(np.int8)
        ids = self.as_float(call.args[1]) if isinstance(call.args[1], relax.Var) else call.args[1]
        rows = relax.Call(call.op, [relax.const(q, "int8"), ids], call.attrs)
        scales = relax.Call(call.op, [relax.const(s, "float32"), ids], call.attrs)
        y = relax.op.multiply(relax.op.astype(rows, "float32"), relax.op.expand_dims(scales, -1))
        self.env[layer.output] = ("f", self.bb.emit(y, name_hint=layer.name))
        layer.info = {"scale_out_min": float(s.min()), "scale_out_max": float(s.max())}

    def add(self, layer: Layer) -> bool:
        a, b = layer.inputs
        if self.kind(a) == "f" or self.kind(b) == "f":
            return False  # only between integer tensors; a float operand keeps the add in float
        (qa, sa), (qb, sb) = self.as_quant(a), self.as_quant(b)
        sy = self.scale[layer.output]
        total = relax.op.add(self.rescale(qa, np.float64(sa) / sy), self.rescale(qb, np.float64(sb) / sy))
        y = relax.op.astype(relax.op.clip(total, -128, 127), "int8")
        self.env[layer.output] = ("q", self.bb.emit(y, name_hint=layer.name), sy)
        layer.info = {"scale_in": [sa, sb], "scale_out": sy}
        return True

    # -- the walk ------------------------------------------------------------------------------
    def rewrite(self, layer: Layer) -> bool:
        """Emit ``layer`` in integers; False leaves it to the float path."""
        if layer.kind == "add":
            return self.add(layer)
        getattr(self, layer.kind)(layer)
        return True

    def skipped(self, v) -> bool:
        """Bindings whose value another rewrite already covers."""
        return v in self.bias_of and not self.kept(self.bias_of[v])  # folded into its linear layer

    def nan_guard(self, b) -> bool:
        """Exporters guard attention against all-masked rows with ``where(isnan(P), 0, P)``: an
        integer tensor is never NaN, so the guard is the tensor itself (no float kernel); a float
        one stays."""
        v, value, name = b.var, b.value, op_name(b.value)
        if name == "relax.isnan" and isinstance(value.args[0], relax.Var) and self.kind(value.args[0]) != "f":
            shape = [int(d) for d in v.ty.shape.values]
            self.env[v] = ("f", self.bb.emit(relax.op.zeros(shape, "bool"), name_hint=v.name))
            self.nans[v] = value.args[0]
            return True
        if name != "relax.where" or _scalar_const(value.args[1]) != 0.0 or not isinstance(value.args[2], relax.Var):
            return False
        x = value.args[2]
        if self.nans.get(value.args[0]) is not None and self.nans[value.args[0]].same_as(x):
            self.env[v] = self.env[x]
            self.alias(v, x)
            return True
        return False

    def alias(self, v, x) -> None:
        """``v`` is the same tensor as ``x`` (subclasses copy what they track)."""

    def form(self, v) -> tuple | None:
        """How ``v`` is held now, without its expression: None (float), ``("q", S)`` or
        ``("acc", S_acc, S_q, narrow)``."""
        e = self.env.get(v)
        if e is None or e[0] == "f":
            return None
        if e[0] == "q":
            return ("q", e[2])
        return ("acc", e[2], e[3], v in getattr(self, "narrow", ()))

    def binding(self, b):
        v = b.var
        if self.nan_guard(b):
            return None
        layer = self.layers.get(v)
        if layer is not None and not self.kept(layer):
            forms = {x: f for x in layer.inputs if (f := self.form(x)) is not None}
            if self.rewrite(layer):
                self.forms[layer.name] = forms
                return None
        if self.skipped(v):
            return None
        op, value = op_name(b.value), b.value
        if op and isinstance(value.args[0], relax.Var) and self.kind(value.args[0]) != "f":
            x = value.args[0]
            c = _scalar_const(value.args[1]) if op in ("relax.multiply", "relax.divide") else None
            if c is not None and c > 0:  # only the scale changes
                f = c if op == "relax.multiply" else 1.0 / c
                e = self.env[x]
                self.env[v] = ("q", e[1], e[2] * f) if e[0] == "q" else ("acc", e[1], e[2] * f, e[3] * f)
                return None
            if op in LAYOUT_OPS or op == "relax.nn.relu":
                q, s = self.as_quant(x)
                if op == "relax.nn.relu":
                    new = relax.op.maximum(q, relax.const(0, "int8"))
                else:
                    new = relax.Call(value.op, [q, *value.args[1:]], value.attrs, value.ty_args)
                self.env[v] = ("q", self.bb.emit(new, name_hint=v.name), s)
                return None
        mapping = {u: self.as_float(u) for u in relax.analysis.free_vars(value) if u in self.env}
        self.env[v] = ("f", emit_binding(self.bb, b, substitute(value, mapping)))
        return None


def quantize_function(
    func: relax.Function,
    layers: list[Layer],
    thresholds: dict,
    keep_float=(),
    extra_outputs: list[relax.Var] | None = None,
    nonlinear: dict[str, str] | None = None,
    smooth: dict | None = None,
    maxima: dict | None = None,
    record: dict | None = None,
) -> tvm.IRModule:
    """The int8 rewrite of ``func`` (see the module docstring): a module of ``main`` and the TIR
    kernels it calls. ``thresholds`` maps each var of
    :func:`observed_vars` to its clipping value. ``extra_outputs`` appends the (dequantized)
    values of those original vars to the outputs, for measuring per-layer error. ``nonlinear``
    (op -> implementation) selects the integer-only rewrite of
    :mod:`edgecompile.quant.integer_only`. ``smooth`` maps linear inputs to ``(sigma, threshold
    of x / sigma)`` (:func:`smoothing_factors`); ``maxima`` the largest ``|x|`` calibration saw per
    var (integer-only: the 16-bit residual stream's range). ``record``, if given, receives
    ``forms`` (:attr:`Rewriter.forms`: which layers were rewritten, reading which integer inputs)
    and ``requantized`` (the layers whose int32 output was requantized to int8 for a reader)."""
    for layer in layers:
        layer.info = {}
    bb = relax.BlockBuilder()
    params = [relax.Var(p.name, p.ty) for p in func.params]
    with bb.function("main", params, attrs=dict(func.attrs) if func.attrs else None):
        with bb.dataflow():
            if nonlinear:
                from edgecompile.quant.integer_only import IntegerOnlyRewriter

                rw = IntegerOnlyRewriter(bb, thresholds, layers, keep_float, nonlinear, smooth, maxima)
            else:
                rw = Rewriter(bb, thresholds, layers, keep_float, smooth)
            rw.env.update({p: ("f", n) for p, n in zip(func.params, params)})
            rw.nonneg = nonnegative_vars(func)
            for b in bindings(func):
                rw.binding(b)
            ret = func.body.body
            mapping = {u: rw.as_float(u) for u in relax.analysis.free_vars(ret)}
            out = substitute(ret, mapping)
            if extra_outputs:
                out = relax.Tuple([out, *[rw.as_float(v) for v in extra_outputs]])
            out = bb.emit_output(out)
        bb.emit_func_output(out)
    if record is not None:
        record["forms"] = rw.forms
        outputs = {layer.output: layer.name for layer in layers}
        record["requantized"] = {outputs[v] for v in rw.qcache if isinstance(v, relax.Var) and v in outputs}
    return bb.get()
