"""Core ML export: the Relax ``main`` as an ML Program (coremltools' MIL builder) in ``model.mlpackage``.

Both frontends (ONNX and ``torch.export``) produce Relax; after ``FoldConstant`` its dataflow is
walked binding by binding and each Relax op is emitted as MIL ops (:data:`OPS`). An op without a
mapping is a :class:`~edgecompile.errors.BuildError` naming the op and its bindings. Integer
tensors are int32 in Core ML (it has no int64 model inputs): an int64 input of the model (token
ids) is an int32 input of the package, listed in the manifest's ``coreml`` section.

Recipes on a Core ML target (``minimum_deployment_target`` comes from the profile):

- ``fp32``: compute precision float32; ``fp16``: float16 weights and activations (the inputs and
  outputs stay float32, cast at the edges). The ``fp16`` preset is Core ML only for now: the API
  raises :class:`~edgecompile.errors.RecipeError` for it on TVM targets.
- ``int8`` / ``int8-integer-only``: weight-only int8 (``linear_quantize_weights``, symmetric,
  per output channel, weights of at least :data:`WEIGHT_THRESHOLD` elements); activations stay in
  the compute precision (float32, or float16 with ``fp16+int8``). Core ML's activation int8 needs
  calibration through coremltools' experimental API, so ``--calib`` is not used and the PTQ
  options (observer, keep_float, ...) are refused. Integer-only softmax, GELU, LayerNorm and tanh
  have no Core ML equivalent: they stay Core ML float ops, listed in ``coreml.stayed_float``.
- ``lowrank`` is applied to the Relax graph before the export; ``hash-attention`` is refused.

Linux cannot run Core ML predictions; the artifact is checked structurally (spec, op list, weight
dtypes) by the tests. Op and const names are derived from the Relax bindings and the package's
``Manifest.json`` identifiers from its paths, so the same model gives the same package bytes.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgecompile.errors import BuildError, RecipeError, TargetError
from edgecompile.version import __version__

log = logging.getLogger("edgecompile")

PACKAGE = "model.mlpackage"
WEIGHT_THRESHOLD = 2048  # coremltools' default: smaller consts (biases, norms) keep the compute precision
NONLINEAR = ("softmax", "gelu", "layer_norm", "tanh", "erf")  # integer-only in TVM builds, float in Core ML


def check_recipe(rec, keep_float: list[str] | None = None) -> None:
    """Refuse what a Core ML target cannot honour, with what to do instead."""
    if rec.part("hash-attention") is not None:
        raise RecipeError(
            "hash-attention is not supported on Core ML targets (its packed-code kernels are TVM kernels); "
            "compile for a TVM target (e.g. --target aarch64-linux) or drop hash-attention from the recipe"
        )
    part = rec.quant_part()
    if part is not None:
        extra = sorted(k for k in part.options if k not in ("ops", "softmax", "gelu", "layernorm", "tanh"))
        if extra or keep_float:
            names = ", ".join(extra + (["keep_float"] if keep_float else []))
            raise RecipeError(
                f"{part.preset} on a Core ML target is weight-only int8 (no calibration): the options {names} "
                "do not apply; drop them, or compile for a TVM target for calibrated int8"
            )


def export_coreml(
    imported,
    mod,
    rec,
    profile,
    staging: Path,
    *,
    lowrank: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Convert ``mod`` (the Relax module of ``imported``) to ``staging/model.mlpackage`` for ``profile``
    with recipe ``rec``; returns the artifact's manifest (without the file checksums)."""
    ct = _coremltools()
    from tvm import relax

    from edgecompile.ir.energy import model_energy
    from edgecompile.ir.native_output import captured

    say = progress or (lambda _msg: None)
    target = deployment_target(profile)
    with captured(log):  # TVM's native warnings go to the log
        mod = relax.transform.FoldConstant()(mod)
    fp16 = rec.part("fp16") is not None
    quant = rec.quant_part()
    say(
        f"converting to a Core ML ML Program for {profile.minimum_deployment_target} (recipe {rec}"
        + (": weight-only int8)" if quant else ")")
    )
    precision = ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32
    try:
        prog = to_mil(mod, [s.name for s in imported.inputs], [s.name for s in imported.outputs], target, fp16)
        with contextlib.redirect_stderr(io.StringIO()):  # coremltools' per-pass progress bars
            model = ct.convert(
                prog,
                convert_to="mlprogram",
                minimum_deployment_target=target,
                compute_precision=precision,
                skip_model_load=True,
            )
            if quant is not None:
                model = _quantize_weights(model)
    except (ValueError, TypeError, NotImplementedError, AssertionError, RuntimeError) as e:
        raise BuildError(f"coremltools could not convert the model for {profile.name}: {e}") from e
    meta = model.user_defined_metadata
    meta.pop("com.github.apple.coremltools.conversion_date", None)  # same model, same bytes
    meta["com.edgecompile.version"], meta["com.edgecompile.recipe"] = __version__, str(rec)
    path = staging / PACKAGE
    model.save(str(path))
    _stable_identifiers(path)
    spec = model.get_spec()
    ops = program_ops(spec)
    stayed = sorted(op for op in NONLINEAR if ops.get(op)) if quant and quant.preset == "int8-integer-only" else []
    if stayed:
        log.info("Core ML has no integer-only %s: they stay float ops", ", ".join(stayed))
    coreml = {
        "minimum_deployment_target": profile.minimum_deployment_target,
        "coremltools_version": ct.__version__,
        "compute_precision": "float16" if fp16 else "float32",
        "weights": (
            f"int8 (weight-only, symmetric per channel, consts of >= {WEIGHT_THRESHOLD} elements)"
            if quant
            else ("float16" if fp16 else "float32")
        ),
        "inputs": _features(spec.description.input),
        "outputs": _features(spec.description.output),
        "ops": dict(sorted(ops.items())),
        "stayed_float": stayed,
        "weight_dtypes": weight_dtypes(spec),
    }
    return {
        "target": profile.to_json(),
        "recipe": rec.to_json(),
        "source": imported.source,
        "inputs": [s.to_json() for s in imported.inputs],
        "outputs": [s.to_json() for s in imported.outputs],
        "library": PACKAGE,
        "linker": None,
        "link_command": None,
        "tuning": None,
        "quantization": None,
        "lowrank": lowrank,
        "hash_attention": None,
        "float_ops": None,
        "energy": model_energy(mod, profile.energy),
        "coreml": coreml,
    }


def deployment_target(profile):
    """The ``coremltools.target`` member named by the profile's ``minimum_deployment_target``."""
    ct = _coremltools()
    name = profile.minimum_deployment_target
    known = list(ct.target.__members__)  # with the aliases: macOS14 is iOS17's opset
    if not name or name not in known:
        raise TargetError(
            f"target profile {profile.name} (runtime coreml) needs minimum_deployment_target, one of "
            f"{', '.join(known)}; got {name!r}"
        )
    return ct.target[name]


def _coremltools():
    # its import warns about untested torch/scikit-learn versions and the missing macOS-only runtime
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    try:
        import coremltools as ct
    except ImportError as e:
        raise BuildError("Core ML targets need coremltools: pip install 'edgecompile[coreml]'") from e
    return ct


def _quantize_weights(model):
    from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

    config = OptimizationConfig(
        global_config=OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=WEIGHT_THRESHOLD
        )
    )
    return linear_quantize_weights(model, config)


def _stable_identifiers(package: Path) -> None:
    """Replace the random item identifiers of ``Manifest.json`` by ones derived from the item paths."""
    manifest = package / "Manifest.json"
    data = json.loads(manifest.read_text())
    entries = data.get("itemInfoEntries", {})
    new_ids = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, e.get("path", old))).upper() for old, e in entries.items()}
    data["itemInfoEntries"] = {new_ids[k]: v for k, v in sorted(entries.items(), key=lambda kv: new_ids[kv[0]])}
    data["rootModelIdentifier"] = new_ids.get(data.get("rootModelIdentifier"), data.get("rootModelIdentifier"))
    manifest.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n")


# --- the package, read back ---------------------------------------------------------------------------


def _operations(spec):
    """Every MIL operation of ``spec``'s program (nested blocks included)."""

    def walk(block):
        for op in block.operations:
            yield op
            for b in op.blocks:
                yield from walk(b)

    for func in spec.mlProgram.functions.values():
        for block in func.block_specializations.values():
            yield from walk(block)


def program_ops(spec) -> Counter:
    """Counts of the MIL op types of an ML Program spec, consts left out (see :func:`weight_dtypes`)."""
    return Counter(op.type for op in _operations(spec) if op.type != "const")


def weight_dtypes(spec) -> dict[str, int]:
    """How many weight tensors (consts of at least 16 elements) the program stores per dtype, e.g.
    ``{"fp16": n, "int8": m}``; a weight quantized by a ``constexpr_*`` op counts as its stored type."""
    counts: Counter = Counter()
    for op in _operations(spec):
        if op.type == "const":
            t = op.outputs[0].type.tensorType
            if t.rank and int(np.prod([d.constant.size for d in t.dimensions])) >= 16:
                counts[_dtype_name(t.dataType)] += 1
        elif op.type == "constexpr_affine_dequantize":  # iOS16-17: the data is an attribute
            counts[_dtype_name(op.attributes["quantized_data"].type.tensorType.dataType)] += 1
    return dict(sorted(counts.items()))


def _dtype_name(dt: int) -> str:
    from coremltools.proto import MIL_pb2

    name = MIL_pb2.DataType.Name(dt).lower()
    return name.replace("float", "fp") if name in ("float16", "float32", "float64") else name


def _features(features) -> list[dict]:
    from coremltools.proto import FeatureTypes_pb2

    dtypes = {v: k.lower() for k, v in FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.items()}
    return [
        {
            "name": f.name,
            "shape": [int(d) for d in f.type.multiArrayType.shape],
            "dtype": dtypes.get(f.type.multiArrayType.dataType, "?"),
        }
        for f in features
    ]


# --- Relax -> MIL ---------------------------------------------------------------------------------------

_MIL_DTYPE = {
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
_NP_DTYPE = {"fp32": np.float32, "fp16": np.float16, "int32": np.int32, "bool": np.bool_}


def to_mil(mod, input_names: list[str], output_names: list[str], opset, fp16: bool = False):
    """The MIL program of ``mod``'s ``main`` (after ``FoldConstant``) with the given input and output names;
    ``fp16`` clamps float constants to float16's range (a -3.4e38 mask value stays finite, as in float32)."""
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program, types

    func = mod["main"]
    _check_supported(mod)
    specs = {}
    for p, name in zip(func.params, input_names):
        dt = _mil_dtype(str(p.ty.dtype), name)
        specs[name] = mb.placeholder(shape=_shape(p.ty), dtype=types.string_to_builtin(dt))
    with Function(specs, opset_version=opset) as mil_func:
        low = _Lowerer(mb, mod, set(input_names) | set(output_names), fp16)
        for p, name in zip(func.params, input_names):
            low.env[p] = mil_func.inputs[name]
        from edgecompile.ir.walk import bindings

        for b in bindings(func):
            low.env[b.var] = _checked(low.value(b.value, _safe(b.var.name)), b.var)
        leaves = _flatten(low.value(func.body.body, "output"))
        if len(leaves) != len(output_names):
            raise BuildError(f"the model returns {len(leaves)} tensors, its outputs are {output_names}")
        outs = []
        for leaf, name in zip(leaves, output_names):
            v = low.var(leaf, name + "_value")
            if v.dtype == types.bool:
                v = mb.cast(x=v, dtype="int32", name=low.name(name + "_int"))
            if v.op is None or v in outs:  # a model input, or a tensor returned twice: copy it
                v = mb.identity(x=v, name=name)
            v.set_name(name)
            outs.append(v)
        mil_func.set_outputs(outs)
    prog = Program()
    prog.add_function("main", mil_func)
    return prog


def _checked(v, var):
    """``v`` (the MIL value of Relax ``var``) after checking that MIL inferred ``var``'s static shape."""
    from tvm import relax

    ty = var.ty
    if isinstance(ty, relax.TensorType) and hasattr(v, "op") and ty.shape is not None:
        want = tuple(int(getattr(d, "value", -1)) for d in ty.shape.values)
        if -1 not in want and tuple(v.shape) != want:
            raise BuildError(
                f"Core ML export: {var.name} has shape {tuple(v.shape)} in the ML Program but {want} in Relax "
                "(a bug of the op mapping; compile for a TVM target meanwhile)"
            )
    return v


def _check_supported(mod) -> None:
    from tvm import relax

    from edgecompile.ir.walk import bindings

    missing: dict[str, list[str]] = {}
    for b in bindings(mod["main"]):
        v = b.value
        if isinstance(v, relax.Call):
            name = _op_name(v)
            if name == "relax.call_tir" and _tir_kernel(mod, v) is None:
                missing.setdefault(f"relax.call_tir of kernel {v.args[0].name_hint}", []).append(b.var.name)
            elif name not in OPS:
                missing.setdefault(name, []).append(b.var.name)
    if missing:
        shown = "; ".join(
            f"{op} ({len(vs)}x, e.g. binding {vs[0]})" for op, vs in sorted(missing.items(), key=lambda kv: kv[0])
        )
        raise BuildError(
            f"the Core ML export has no mapping for {shown}: compile for a TVM target (e.g. --target "
            "aarch64-linux or native), or re-export the model without these ops; the ops Core ML export "
            "supports are listed in edgecompile.coreml.export.OPS"
        )


# Kernels the ONNX importer emits as TE (e.g. Clip with one bound): name -> (MIL op, what the body computes).
_TIR_KERNELS = {"maximum": ("maximum", "T.max("), "minimum": ("minimum", "T.min(")}


def _tir_kernel(mod, call) -> str | None:
    """The MIL op of a ``call_tir`` to an elementwise kernel :data:`_TIR_KERNELS` knows, else None."""
    gv = call.args[0]
    entry = _TIR_KERNELS.get(re.sub(r"_?\d+$", "", gv.name_hint))
    if entry is None or len(call.args[1].fields) != 2 or entry[1] not in mod[gv].script():
        return None
    return entry[0]


def _op_name(call) -> str:
    return getattr(call.op, "name", type(call.op).__name__)


def _safe(name: str) -> str:
    return re.sub(r"\W", "_", name) or "v"


def _shape(ty) -> list[int]:
    if ty.shape is None or not all(hasattr(d, "value") for d in ty.shape.values):
        raise BuildError("Core ML export needs static shapes: give --input-shape for every symbolic dimension")
    return [int(d.value) for d in ty.shape.values]


def _mil_dtype(dtype: str, what: str) -> str:
    dt = _MIL_DTYPE.get(dtype)
    if dt is None:
        raise BuildError(f"Core ML export: tensor {what} has dtype {dtype}, which Core ML does not have")
    return dt


def _flatten(v) -> list:
    if isinstance(v, (list, tuple)):
        return [leaf for item in v for leaf in _flatten(item)]
    return [v]


def _ints(expr) -> list[int]:
    """Integers of a shape, a tuple of prim values, a prim value or a constant."""
    from tvm import relax
    from tvm.ir.expr import Constant

    if isinstance(expr, relax.ShapeExpr):
        return [int(v) for v in expr.values]
    if isinstance(expr, relax.Tuple):
        return [i for f in expr.fields for i in _ints(f)]
    if isinstance(expr, Constant):
        v = expr.value
        return [int(x) for x in np.asarray(v.numpy() if hasattr(v, "numpy") else v).reshape(-1)]
    if hasattr(expr, "value"):  # PrimValue
        v = expr.value
        return [int(getattr(v, "value", v))]
    raise BuildError(f"Core ML export needs a static integer list here, got a {type(expr).__name__}")


def _scalar(expr) -> float:
    from tvm.ir.expr import Constant

    if isinstance(expr, Constant):
        v = expr.value
        return float(np.asarray(v.numpy() if hasattr(v, "numpy") else v).reshape(-1)[0])
    v = expr.value
    return float(getattr(v, "value", v))


class _Lowerer:
    """Emits MIL ops for Relax values; ``env`` maps Relax vars to MIL vars (or lists of them)."""

    def __init__(self, mb, mod, reserved: set[str], fp16: bool = False):
        self.mb = mb
        self.mod = mod
        self.fp16 = fp16
        self.env: dict = {}
        self.used = set(reserved)
        self.consts: dict = {}

    def name(self, base: str) -> str:
        """A fresh op name starting with ``base``."""
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def var(self, v, name: str):
        """A MIL var for ``v``: a MIL var already, or a numpy array made a named const."""
        if isinstance(v, (np.ndarray, np.generic)):
            return self.mb.const(val=np.asarray(v), name=self.name(name))
        return v

    def value(self, expr, name: str):
        from tvm import relax
        from tvm.ir.expr import Constant

        if isinstance(expr, relax.Var):
            return self.env[expr]
        if isinstance(expr, Constant):
            v = expr.value
            arr = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
            arr = arr.astype(_NP_DTYPE[_mil_dtype(str(arr.dtype), name)])
            if self.fp16 and arr.dtype == np.float32:
                big = float(np.finfo(np.float16).max)
                arr = np.clip(arr, -big, big).astype(np.float32)
            return arr
        if isinstance(expr, relax.Tuple):
            return [self.value(f, f"{name}_{i}") for i, f in enumerate(expr.fields)]
        if isinstance(expr, relax.TupleGetItem):
            return self.value(expr.tuple_value, name)[expr.index]
        if isinstance(expr, relax.Call):
            return OPS[_op_name(expr)](self, expr, name)
        raise BuildError(f"Core ML export cannot convert a {type(expr).__name__} ({name})")

    def arg(self, call, i: int, name: str):
        """Argument ``i`` of ``call`` as a MIL var (consts are created once per Relax constant)."""
        from tvm.ir.expr import Constant

        a = call.args[i]
        if isinstance(a, Constant):
            if a not in self.consts:
                self.consts[a] = self.var(self.value(a, f"{name}_c{i}"), f"{name}_c{i}")
            return self.consts[a]
        return self.var(self.value(a, f"{name}_a{i}"), f"{name}_a{i}")


# One function per Relax op: (lowerer, call, name) -> MIL var (or list of vars).


def _unary(fn: str, **kw):
    return lambda lo, c, n: getattr(lo.mb, fn)(x=lo.arg(c, 0, n), name=lo.name(n), **kw)


def _binary(fn: str):
    return lambda lo, c, n: getattr(lo.mb, fn)(x=lo.arg(c, 0, n), y=lo.arg(c, 1, n), name=lo.name(n))


def _reshape(lo, c, n):
    x = lo.arg(c, 0, n)
    shape = _shape(c.ty)
    if not shape:  # rank 0: squeeze every (unit) axis
        return lo.mb.squeeze(x=x, name=lo.name(n)) if x.rank else lo.mb.identity(x=x, name=lo.name(n))
    return lo.mb.reshape(x=x, shape=np.array(shape, np.int32), name=lo.name(n))


def _permute(lo, c, n):
    x = lo.arg(c, 0, n)
    axes = [int(a) for a in c.attrs.axes] if c.attrs.axes is not None else list(range(x.rank))[::-1]
    return lo.mb.transpose(x=x, perm=np.array(axes, np.int32), name=lo.name(n))


def _broadcast_to(lo, c, n):
    return _broadcast(lo, lo.arg(c, 0, n), _shape(c.ty), n)


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
    dt = _mil_dtype(str(c.attrs.dtype), n)
    from coremltools.converters.mil.mil import types

    if types.builtin_to_string(x.dtype) == dt:
        return lo.mb.identity(x=x, name=lo.name(n))
    return lo.mb.cast(x=x, dtype=dt, name=lo.name(n))


def _where(lo, c, n):
    cond, a, b = lo.arg(c, 0, n), lo.arg(c, 1, n), lo.arg(c, 2, n)
    out = _shape(c.ty)
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
    values = [lo.var(v, f"{n}_c{i}") for i, v in enumerate(_flatten(lo.value(c.args[0], n)))]
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
    axes, begin, end = _ints(c.args[1]), _ints(c.args[2]), _ints(c.args[3])
    strides = _ints(c.args[4]) if len(c.args) > 4 and c.args[4] is not None else [1] * len(axes)
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

    minus = lo.var(np.array(-1, _NP_DTYPE[types.builtin_to_string(x.dtype)]), n + "_minus1")
    return lo.mb.mul(x=x, y=minus, name=lo.name(n))


def _clip(lo, c, n):
    x = lo.arg(c, 0, n)
    lo_, hi = np.float32(_scalar(c.args[1])), np.float32(_scalar(c.args[2]))
    return lo.mb.clip(x=x, alpha=lo.var(lo_, n + "_min"), beta=lo.var(hi, n + "_max"), name=lo.name(n))


def _call_tir(lo, c, n):
    x, y = (lo.var(lo.value(a, f"{n}_a{i}"), f"{n}_a{i}") for i, a in enumerate(c.args[1].fields))
    return getattr(lo.mb, _tir_kernel(lo.mod, c))(x=x, y=y, name=lo.name(n))


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
