"""A numpy interpreter of Relax functions: the reference the compiled quantized graph is checked
against bit for bit.

It evaluates ``main`` binding by binding with numpy, in the dtypes the graph states (int8/int32/
int64 arithmetic wraps and shifts as in C; float32 stays float32). It covers the ops our
rewrites emit (integer matmul with int32 accumulation, requantization, quantize/dequantize,
integer add and ReLU, layout ops) and the common float ops around them; anything else raises
``NotImplementedError`` naming the op. Float transcendental ops (softmax, erf, ...) are numpy's,
so only integer results are expected to match compiled code exactly.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant

from edgecompile.ir.attrs import QUANTIZE_ATTR, ROW_DIVIDE_ATTR
from edgecompile.ir.walk import bindings


def _dtype(call) -> str:
    return str(call.ty.dtype)


def _matmul(call, a, b):
    out = _dtype(call)
    if np.issubdtype(a.dtype, np.integer):
        return np.matmul(a.astype(np.int64), b.astype(np.int64)).astype(out)
    return np.matmul(a, b).astype(out)


def _layer_norm(call, x, gamma, beta):
    axes = tuple(int(a) for a in call.attrs.axes)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + np.float32(call.attrs.epsilon))
    return (y * gamma + beta).astype(np.float32)


def _softmax(call, x):
    e = np.exp(x - x.max(axis=int(call.attrs.axis), keepdims=True))
    return (e / e.sum(axis=int(call.attrs.axis), keepdims=True)).astype(x.dtype)


_erf = np.vectorize(math.erf, otypes=[np.float64])

_OPS = {
    "relax.matmul": _matmul,
    "relax.add": lambda c, a, b: np.add(a, b, dtype=_dtype(c)),
    "relax.subtract": lambda c, a, b: np.subtract(a, b, dtype=_dtype(c)),
    "relax.multiply": lambda c, a, b: np.multiply(a, b, dtype=_dtype(c)),
    "relax.divide": lambda c, a, b: np.divide(a, b).astype(_dtype(c)),
    "relax.right_shift": lambda c, a, b: np.right_shift(a, b).astype(_dtype(c)),
    "relax.left_shift": lambda c, a, b: np.left_shift(a, b).astype(_dtype(c)),
    "relax.maximum": lambda c, a, b: np.maximum(a, b).astype(_dtype(c)),
    "relax.minimum": lambda c, a, b: np.minimum(a, b).astype(_dtype(c)),
    "relax.less": lambda c, a, b: np.less(a, b),
    "relax.where": lambda c, m, a, b: np.where(m, a, b).astype(_dtype(c)),
    "relax.clip": lambda c, x, lo, hi: np.clip(x, lo, hi).astype(x.dtype),
    "relax.astype": lambda c, x: x.astype(_dtype(c)),
    "relax.round": lambda c, x: np.rint(x),
    "relax.floor": lambda c, x: np.floor(x),
    "relax.nn.relu": lambda c, x: np.maximum(x, 0).astype(x.dtype),
    "relax.reshape": lambda c, x, _shape: x.reshape([int(d) for d in c.ty.shape.values]),
    "relax.permute_dims": lambda c, x: np.transpose(x, [int(a) for a in c.attrs.axes] if c.attrs.axes else None),
    "relax.expand_dims": lambda c, x: x.reshape([int(d) for d in c.ty.shape.values]),
    "relax.squeeze": lambda c, x: x.reshape([int(d) for d in c.ty.shape.values]),
    "relax.flatten": lambda c, x: x.reshape(-1),
    "relax.take": lambda c, x, i: np.take(x, i, axis=int(c.attrs.axis)),
    "relax.nn.softmax": _softmax,
    "relax.nn.layer_norm": _layer_norm,
    "relax.erf": lambda c, x: _erf(x).astype(x.dtype),
    "relax.tanh": lambda c, x: np.tanh(x),
    "relax.exp": lambda c, x: np.exp(x),
    "relax.sqrt": lambda c, x: np.sqrt(x),
    "relax.power": lambda c, a, b: np.power(a, b).astype(_dtype(c)),
    "relax.floor_divide": lambda c, a, b: np.floor_divide(a, b).astype(_dtype(c)),
    "relax.negative": lambda c, x: np.negative(x),
    "relax.abs": lambda c, x: np.abs(x),
    "relax.sign": lambda c, x: np.sign(x).astype(x.dtype),
    "relax.greater": lambda c, a, b: np.greater(a, b),
    "relax.isnan": lambda c, x: np.isnan(x),
    "relax.zeros": lambda c, _shape: np.zeros([int(d) for d in c.ty.shape.values], _dtype(c)),
    "relax.greater_equal": lambda c, a, b: np.greater_equal(a, b),
    "relax.max": lambda c, x: x.max(axis=_axes(c), keepdims=bool(c.attrs.keepdims)),
    "relax.sum": lambda c, x: x.sum(axis=_axes(c), keepdims=bool(c.attrs.keepdims), dtype=x.dtype),
    "relax.concat": lambda c, xs: np.concatenate(xs, axis=int(c.attrs.axis)),
    "relax.call_tir": lambda c, f, args: _call_tir(c, args),
}


def _axes(call):
    return None if call.attrs.axis is None else tuple(int(a) for a in call.attrs.axis)


_KERNELS: dict = {}  # GlobalVar -> PrimFunc of the module being run


def _call_tir(call, args):
    """Our own TIR kernels: the integer square root of I-LayerNorm (and its per-row factor), the
    per-row divisions and the input quantize."""
    name = call.args[0].name_hint
    if name.startswith(("isqrt_i64", "ilnorm_factor_i64")):
        from edgecompile.intref.nonlinear import INT31, isqrt

        root = isqrt(args[0])
        if name.startswith("isqrt"):
            return root
        return np.where(root > 0, (INT31 << 8) // np.maximum(root, 1), 0)
    func = _KERNELS.get(call.args[0])
    if func is not None and func.attrs is not None and ROW_DIVIDE_ATTR in func.attrs:
        numerator, add, divisor = (int(v) for v in func.attrs[ROW_DIVIDE_ATTR])
        x = args[0]
        if numerator >= 0:
            return (np.asarray(numerator, x.dtype) // np.maximum(x, 1)).astype(x.dtype)
        return ((x + np.asarray(add, x.dtype)) // np.asarray(divisor, x.dtype)).astype(x.dtype)
    if func is not None and func.attrs is not None and QUANTIZE_ATTR in func.attrs:
        inv, limit = (float(v) for v in func.attrs[QUANTIZE_ATTR])
        x = np.rint(args[0].astype(np.float32) * np.float32(inv))
        return np.clip(x, -limit, limit).astype(np.int32)
    raise NotImplementedError(f"the reference interpreter has no kernel {name}")


def _value(expr, env):
    if isinstance(expr, relax.Var):
        return env[expr]
    if isinstance(expr, Constant):  # tensors, and prim values (clip bounds) as Python numbers
        v = expr.value
        return v.numpy() if hasattr(v, "numpy") else v
    if isinstance(expr, relax.Tuple):
        return tuple(_value(f, env) for f in expr.fields)
    if isinstance(expr, relax.TupleGetItem):
        return _value(expr.tuple_value, env)[expr.index]
    if isinstance(expr, relax.ShapeExpr):
        return tuple(int(v) for v in expr.values)
    if isinstance(expr, relax.GlobalVar):
        return expr
    if isinstance(expr, relax.Call):
        name = getattr(expr.op, "name", str(expr.op))
        fn = _OPS.get(name)
        if fn is None:
            raise NotImplementedError(f"the reference interpreter has no {name}")
        return fn(expr, *[_value(a, env) for a in expr.args])
    raise NotImplementedError(f"the reference interpreter cannot evaluate a {type(expr).__name__}")


def evaluate_bindings(binds, env: dict) -> dict:
    """Evaluate ``binds`` in order on ``env`` (var -> array), adding each bound var to it."""
    for b in binds:
        env[b.var] = _value(b.value, env)
    return env


def run(func, inputs: dict[str, np.ndarray]):
    """Evaluate ``func`` (a Relax function, or a module: its ``main`` and the kernels it calls) on
    ``inputs`` (by parameter name); returns an array or a tuple of them."""
    _KERNELS.clear()
    if isinstance(func, tvm.IRModule):
        _KERNELS.update({gv: f for gv, f in func.functions.items() if not isinstance(f, relax.Function)})
        func = func["main"]
    env = evaluate_bindings(bindings(func), {p: np.asarray(inputs[p.name]) for p in func.params})
    return _value(func.body.body, env)
