"""Relax ops as MIL ops: :data:`OPS` maps each Relax op name to a converter ``(lowerer, call, name) ->
MIL var`` (or a list of them), plus the dtype, shape and constant helpers the converters and the
lowerer (:mod:`edgecompile.coreml.mil`) share. Integer tensors are int32 in Core ML."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from edgecompile.errors import BuildError
from edgecompile.ir.ops import op_name, scalar_value

MIL_DTYPE = {
    "float32": "fp32",
    "float16": "fp16",
    "float64": "fp32",
    "int64": "int32",
    "int32": "int32",
    "int16": "int32",
    "int8": "int32",
    "uint8": "int32",
    "bool": "bool",
}
NP_DTYPE = {"fp32": np.float32, "fp16": np.float16, "int32": np.int32, "bool": np.bool_}


def static_shape(ty) -> list[int]:
    """The dimensions of a tensor type, all static (else a :class:`BuildError` asking for input shapes)."""
    if ty.shape is None or not all(hasattr(d, "value") for d in ty.shape.values):
        raise BuildError("Core ML export needs static shapes: give --input-shape for every symbolic dimension")
    return [int(d.value) for d in ty.shape.values]


def mil_dtype(dtype: str, what: str) -> str:
    """The MIL dtype name of a Relax dtype (integers are int32); ``what`` names the tensor in the error."""
    dt = MIL_DTYPE.get(dtype)
    if dt is None:
        raise BuildError(f"Core ML export: tensor {what} has dtype {dtype}, which Core ML does not have")
    return dt


def flatten(v) -> list:
    """The leaves of nested lists/tuples, in order."""
    if isinstance(v, (list, tuple)):
        return [leaf for item in v for leaf in flatten(item)]
    return [v]


def static_ints(expr) -> list[int]:
    """Integers of a shape, a tuple of prim values, a prim value or a constant."""
    from tvm import relax
    from tvm.ir.expr import Constant

    if isinstance(expr, relax.ShapeExpr):
        return [int(v) for v in expr.values]
    if isinstance(expr, relax.Tuple):
        return [i for f in expr.fields for i in static_ints(f)]
    if isinstance(expr, Constant):
        v = expr.value
        return [int(x) for x in np.asarray(v.numpy() if hasattr(v, "numpy") else v).reshape(-1)]
    if hasattr(expr, "value"):  # PrimValue
        v = expr.value
        return [int(getattr(v, "value", v))]
    raise BuildError(f"Core ML export needs a static integer list here, got a {type(expr).__name__}")


# Kernels the ONNX importer emits as TE (e.g. Clip with one bound): name -> (MIL op, what the body computes).
TIR_KERNELS = {"maximum": ("maximum", "T.max("), "minimum": ("minimum", "T.min(")}


def tir_kernel(mod, call) -> str | None:
    """The MIL op of a ``call_tir`` to an elementwise kernel :data:`TIR_KERNELS` knows, else None."""
    gv = call.args[0]
    entry = TIR_KERNELS.get(re.sub(r"_?\d+$", "", gv.name_hint))
    if entry is None or len(call.args[1].fields) != 2 or entry[1] not in mod[gv].script():
        return None
    return entry[0]


def call_name(call) -> str:
    """The op name of a Relax call (:func:`edgecompile.ir.ops.op_name`); for a call of a function rather
    than an op (a ``GlobalVar``, an ``ExternFunc``), the callee's type name."""
    return op_name(call) or type(call.op).__name__


# One function per Relax op: (lowerer, call, name) -> MIL var (or list of vars).


def _unary(fn: str, **kw):
    return lambda lo, c, n: getattr(lo.mb, fn)(x=lo.arg(c, 0, n), name=lo.name(n), **kw)


def _binary(fn: str):
    return lambda lo, c, n: getattr(lo.mb, fn)(x=lo.arg(c, 0, n), y=lo.arg(c, 1, n), name=lo.name(n))


def _reshape(lo, c, n):
    x = lo.arg(c, 0, n)
    shape = static_shape(c.ty)
    if not shape:  # rank 0: squeeze every (unit) axis
        return lo.mb.squeeze(x=x, name=lo.name(n)) if x.rank else lo.mb.identity(x=x, name=lo.name(n))
    return lo.mb.reshape(x=x, shape=np.array(shape, np.int32), name=lo.name(n))


def _permute(lo, c, n):
    x = lo.arg(c, 0, n)
    axes = [int(a) for a in c.attrs.axes] if c.attrs.axes is not None else list(range(x.rank))[::-1]
    return lo.mb.transpose(x=x, perm=np.array(axes, np.int32), name=lo.name(n))


def _broadcast_to(lo, c, n):
    return _broadcast(lo, lo.arg(c, 0, n), static_shape(c.ty), n)


def _broadcast(lo, x, out: list[int], n: str):
    """``x`` repeated to shape ``out`` (numpy broadcasting)."""
    shape = list(x.shape)
    if len(shape) < len(out):
        shape = [1] * (len(out) - len(shape)) + shape
        x = lo.mb.reshape(x=x, shape=np.array(shape, np.int32), name=lo.name(n + "_rank"))
    reps = [o // s if s != o else 1 for s, o in zip(shape, out)]
    return lo.mb.tile(x=x, reps=np.array(reps, np.int32), name=lo.name(n))


def _softmax(lo, c, n):
    return lo.mb.softmax(x=lo.arg(c, 0, n), axis=int(c.attrs.axis), name=lo.name(n))


def _log_softmax(lo, c, n):
    s = lo.mb.softmax(x=lo.arg(c, 0, n), axis=int(c.attrs.axis), name=lo.name(n + "_softmax"))
    return lo.mb.log(x=s, name=lo.name(n))


def _layer_norm(lo, c, n):
    x = lo.arg(c, 0, n)
    kw = {"gamma": lo.arg(c, 1, n) if c.attrs.scale else None, "beta": lo.arg(c, 2, n) if c.attrs.center else None}
    axes = np.array([int(a) for a in c.attrs.axes], np.int32)
    return lo.mb.layer_norm(
        x=x, axes=axes, epsilon=np.float32(c.attrs.epsilon), name=lo.name(n), **{k: v for k, v in kw.items() if v}
    )


def _astype(lo, c, n):
    x = lo.arg(c, 0, n)
    dt = mil_dtype(str(c.attrs.dtype), n)
    from coremltools.converters.mil.mil import types

    if types.builtin_to_string(x.dtype) == dt:
        return lo.mb.identity(x=x, name=lo.name(n))
    return lo.mb.cast(x=x, dtype=dt, name=lo.name(n))


def _where(lo, c, n):
    cond, a, b = lo.arg(c, 0, n), lo.arg(c, 1, n), lo.arg(c, 2, n)
    out = static_shape(c.ty)
    if list(np.broadcast_shapes(tuple(a.shape), tuple(b.shape))) != out:  # MIL's select takes its shape from a, b
        if list(cond.shape) == out and a.val is not None and np.size(a.val) == 1:  # no folded constant of out's size
            value = lo.var(np.asarray(a.val).reshape(()), n + "_value")
            a = lo.mb.fill_like(ref_tensor=cond, value=value, name=lo.name(n + "_a"))
        else:
            a = _broadcast(lo, a, out, n + "_a")
    return lo.mb.select(cond=cond, a=a, b=b, name=lo.name(n))


def _take(lo, c, n):
    x = lo.arg(c, 0, n)
    idx = lo.arg(c, 1, n)
    axis = 0 if c.attrs.axis is None else int(c.attrs.axis)
    if c.attrs.axis is None:
        x = lo.mb.reshape(x=x, shape=np.array([-1], np.int32), name=lo.name(n + "_flat"))
    return lo.mb.gather(x=x, indices=idx, axis=axis, name=lo.name(n))


def _concat(lo, c, n):
    values = [lo.var(v, f"{n}_c{i}") for i, v in enumerate(flatten(lo.value(c.args[0], n)))]
    return lo.mb.concat(values=values, axis=int(c.attrs.axis), name=lo.name(n))


def _split(lo, c, n):
    x = lo.arg(c, 0, n)
    axis = int(c.attrs.axis)
    dim = x.shape[axis]
    spec = c.attrs.indices_or_sections
    if isinstance(spec, int) or hasattr(spec, "value"):
        k = int(getattr(spec, "value", spec))
        return list(lo.mb.split(x=x, num_splits=k, axis=axis, name=lo.name(n)))
    bounds = [0, *[int(getattr(i, "value", i)) for i in spec], dim]
    sizes = np.array([b - a for a, b in zip(bounds, bounds[1:])], np.int32)
    return list(lo.mb.split(x=x, split_sizes=sizes, axis=axis, name=lo.name(n)))


def _strided_slice(lo, c, n):
    x = lo.arg(c, 0, n)
    shape = list(x.shape)
    axes, begin, end = static_ints(c.args[1]), static_ints(c.args[2]), static_ints(c.args[3])
    strides = static_ints(c.args[4]) if len(c.args) > 4 and c.args[4] is not None else [1] * len(axes)
    b, e, s = [0] * len(shape), list(shape), [1] * len(shape)
    for ax, lo_, hi, st in zip(axes, begin, end, strides):
        dim = shape[ax]
        if st <= 0:
            raise BuildError(f"Core ML export: strided_slice {n} has stride {st}; only positive strides are mapped")
        b[ax] = min(max(lo_ + dim if lo_ < 0 else lo_, 0), dim)
        e[ax] = min(max(hi + dim if hi < 0 else hi, 0), dim)
        s[ax] = st
    return lo.mb.slice_by_index(
        x=x, begin=np.array(b, np.int32), end=np.array(e, np.int32), stride=np.array(s, np.int32), name=lo.name(n)
    )


def _reduce(fn: str):
    def emit(lo, c, n):
        x = lo.arg(c, 0, n)
        axes = list(range(x.rank)) if c.attrs.axis is None else [int(a) for a in c.attrs.axis]
        return getattr(lo.mb, fn)(x=x, axes=np.array(axes, np.int32), keep_dims=bool(c.attrs.keepdims), name=lo.name(n))

    return emit


def _negative(lo, c, n):
    x = lo.arg(c, 0, n)
    from coremltools.converters.mil.mil import types

    minus = lo.var(np.array(-1, NP_DTYPE[types.builtin_to_string(x.dtype)]), n + "_minus1")
    return lo.mb.mul(x=x, y=minus, name=lo.name(n))


def _clip(lo, c, n):
    x = lo.arg(c, 0, n)
    lo_, hi = (_bound(c.args[i], n) for i in (1, 2))
    return lo.mb.clip(x=x, alpha=lo.var(lo_, n + "_min"), beta=lo.var(hi, n + "_max"), name=lo.name(n))


def _bound(expr, n: str) -> np.float32:
    """A clip bound (a scalar constant) as float32."""
    v = scalar_value(expr)
    if v is None:
        raise BuildError(f"Core ML export: clip {n} needs constant scalar bounds, got a {type(expr).__name__}")
    return np.float32(v)


def _call_tir(lo, c, n):
    x, y = (lo.var(lo.value(a, f"{n}_a{i}"), f"{n}_a{i}") for i, a in enumerate(c.args[1].fields))
    return getattr(lo.mb, tir_kernel(lo.mod, c))(x=x, y=y, name=lo.name(n))


def _isnan(lo, c, n):
    x = lo.arg(c, 0, n)
    return lo.mb.not_equal(x=x, y=x, name=lo.name(n))  # only NaN differs from itself


def _gather_nd(lo, c, n):
    x, idx = lo.arg(c, 0, n), lo.arg(c, 1, n)
    from coremltools.converters.mil.mil import types

    flag = x.dtype == types.bool  # Core ML gathers numbers: bool goes through int32
    if flag:
        x = lo.mb.cast(x=x, dtype="int32", name=lo.name(n + "_int"))
    batch = int(c.attrs.batch_dims)
    out = lo.mb.gather_nd(x=x, indices=idx, batch_dims=batch, name=lo.name(n + "_int" if flag else n))
    return lo.mb.cast(x=out, dtype="bool", name=lo.name(n)) if flag else out


def _matmul(lo, c, n):
    return lo.mb.matmul(x=lo.arg(c, 0, n), y=lo.arg(c, 1, n), name=lo.name(n))


def _conv2d(lo, c, n):
    a = c.attrs
    if str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW" or str(a.out_layout) not in ("NCHW", ""):
        raise BuildError(
            f"Core ML export maps conv2d in NCHW/OIHW layout only ({n} is {a.data_layout}/{a.kernel_layout})"
        )
    top, left, bottom, right = (int(p) for p in a.padding)
    return lo.mb.conv(
        x=lo.arg(c, 0, n),
        weight=lo.arg(c, 1, n),
        strides=np.array([int(s) for s in a.strides], np.int32),
        pad_type="custom",
        pad=np.array([top, bottom, left, right], np.int32),
        dilations=np.array([int(d) for d in a.dilation], np.int32),
        groups=int(a.groups),
        name=lo.name(n),
    )


OPS: dict[str, Callable] = {
    "relax.add": _binary("add"),
    "relax.subtract": _binary("sub"),
    "relax.multiply": _binary("mul"),
    "relax.divide": _binary("real_div"),
    "relax.floor_divide": _binary("floor_div"),
    "relax.power": _binary("pow"),
    "relax.maximum": _binary("maximum"),
    "relax.minimum": _binary("minimum"),
    "relax.less": _binary("less"),
    "relax.less_equal": _binary("less_equal"),
    "relax.greater": _binary("greater"),
    "relax.greater_equal": _binary("greater_equal"),
    "relax.equal": _binary("equal"),
    "relax.not_equal": _binary("not_equal"),
    "relax.logical_and": _binary("logical_and"),
    "relax.logical_or": _binary("logical_or"),
    "relax.logical_not": _unary("logical_not"),
    "relax.matmul": _matmul,
    "relax.exp": _unary("exp"),
    "relax.log": _unary("log"),
    "relax.sqrt": _unary("sqrt"),
    "relax.rsqrt": _unary("rsqrt"),
    "relax.tanh": _unary("tanh"),
    "relax.erf": _unary("erf"),
    "relax.sigmoid": _unary("sigmoid"),
    "relax.abs": _unary("abs"),
    "relax.floor": _unary("floor"),
    "relax.ceil": _unary("ceil"),
    "relax.round": _unary("round"),
    "relax.sin": _unary("sin"),
    "relax.cos": _unary("cos"),
    "relax.sign": _unary("sign"),
    "relax.negative": _negative,
    "relax.clip": _clip,
    "relax.nn.relu": _unary("relu"),
    "relax.nn.silu": _unary("silu"),
    "relax.nn.gelu": _unary("gelu", mode="EXACT"),
    "relax.nn.gelu_tanh": _unary("gelu", mode="TANH_APPROXIMATION"),
    "relax.nn.softmax": _softmax,
    "relax.nn.log_softmax": _log_softmax,
    "relax.nn.layer_norm": _layer_norm,
    "relax.nn.conv2d": _conv2d,
    "relax.reshape": _reshape,
    "relax.expand_dims": _reshape,
    "relax.squeeze": _reshape,
    "relax.flatten": _reshape,
    "relax.broadcast_to": _broadcast_to,
    "relax.permute_dims": _permute,
    "relax.astype": _astype,
    "relax.where": _where,
    "relax.take": _take,
    "relax.gather_nd": _gather_nd,
    "relax.isnan": _isnan,
    "relax.call_tir": _call_tir,
    "relax.concat": _concat,
    "relax.split": _split,
    "relax.strided_slice": _strided_slice,
    "relax.mean": _reduce("reduce_mean"),
    "relax.sum": _reduce("reduce_sum"),
    "relax.max": _reduce("reduce_max"),
    "relax.min": _reduce("reduce_min"),
    "relax.prod": _reduce("reduce_prod"),
}
