"""Energy estimate of a compiled model from its op counts and the target profile's energy table.

The Relax ``main`` that is built (after every rewrite of the recipe) is walked once and each call
counted by the arithmetic it implies, by number type:

- ``matmul`` / ``conv2d``: one multiply per multiply-add in the inputs' type (int8 x int8, fp32)
  and one add in the accumulator's type (int32, fp32);
- elementwise ``multiply``/``divide``/``power``: one multiply per output element; other
  elementwise ops (add, subtract, clip, round, shifts, where, compares, casts, ...): one add;
- ``exp``/``erf``/``tanh``/``sigmoid``/``sqrt``/``rsqrt``/``log``: 4 multiplies and 4 adds per
  element (a polynomial), ``softmax``: that plus a multiply and an add, ``layer_norm``: 3 adds and
  3 multiplies per element; reductions: one add per input element; layout ops: memory only;
  gathers (``take``): memory only; a call to a TIR kernel: the counts the kernel carries
  (:data:`OPS_ATTR`, e.g. the binary-hash attention kernels), else one add per output element.
- memory: every call reads its operands (weights included) and writes its output; views
  (``reshape``, ``squeeze``, ``expand_dims``, ``flatten``) and ops of constants alone (folded
  when built) are free. Counted in 32-bit words at
  the table's ``mem_read_32b``.

Energy = counts x the profile's pJ per op (default: 45 nm, Horowitz ISSCC 2014, the figures
EcoFormer's energy model uses: fp32 multiply 3.7 pJ, add 0.9 pJ). int16/int64 use the int32
entries, fp16 the fp16 ones where the table has them (else fp32). It is an estimate for comparing
recipes, not a measurement: caches, fusion and the hardware's real costs are not modelled.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from tvm import relax
from tvm.ir.expr import Constant

from edgecompile.ir.attrs import OPS_ATTR
from edgecompile.ir.ops import op_name
from edgecompile.ir.walk import bindings

VIEWS = {"relax.reshape", "relax.squeeze", "relax.expand_dims", "relax.flatten"}
MEMORY_ONLY = {"relax.permute_dims", "relax.take", "relax.strided_slice", "relax.concat", "relax.split"}
MULTIPLY = {"relax.multiply", "relax.divide", "relax.power", "relax.floor_divide"}
TRANSCENDENTAL = {"relax.exp", "relax.erf", "relax.tanh", "relax.sigmoid", "relax.sqrt", "relax.rsqrt", "relax.log"}
REDUCTIONS = {"relax.sum", "relax.mean", "relax.max", "relax.min", "relax.prod", "relax.variance"}
# per output element, (multiplies, adds) of the ops priced as polynomials; MULTIPLY is (1, 0), the rest (0, 1)
_ELEMENTWISE = {**dict.fromkeys(TRANSCENDENTAL, (4, 4)), "relax.nn.softmax": (5, 5), "relax.nn.layer_norm": (3, 3)}


def _numel(ty) -> int | None:
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return int(np.prod([int(d) for d in ty.shape.values]))
    except TypeError:  # a symbolic dimension
        return None


def _bits(dtype: str) -> int:
    return 8 if dtype == "bool" else int("".join(c for c in dtype if c.isdigit()) or 32)


def _kind(dtype: str) -> str:
    """The energy table's number type for a TVM dtype."""
    if dtype.startswith("float"):
        return "fp16" if dtype == "float16" else "fp32"
    return "int8" if _bits(dtype) <= 8 else "int32"


def _tensors(value) -> list:
    out = []
    for a in value.args:
        if isinstance(a, relax.Tuple):
            out.extend(a.fields)
        elif isinstance(a, (relax.Var, Constant)):
            out.append(a)
    return [a for a in out if isinstance(a.ty, relax.TensorType)]


def count_ops(func: relax.Function, mod=None) -> Counter:
    """``{"fp32_mul": n, "int8_mul": n, "int32_add": n, ..., "mem_words": n}`` for one run of ``func``;
    a ``call_tir`` of a kernel of ``mod`` that carries :data:`OPS_ATTR` counts those."""
    c: Counter = Counter()
    for b in bindings(func):
        if isinstance(b.value, relax.Call):
            kernel = _kernel_counts(b.value, mod)
            c.update(kernel if kernel is not None else _call_counts(b))
    return c


def _kernel_counts(value: relax.Call, mod) -> dict | None:
    """The op counts a called TIR kernel carries (:data:`OPS_ATTR`), if it does."""
    if op_name(value) != "relax.call_tir" or mod is None:
        return None
    gv = value.args[0]
    attrs = mod[gv].attrs if gv in mod.get_global_vars() else None
    ops = attrs.get(OPS_ATTR) if attrs is not None else None
    return None if ops is None else {str(k): int(v) for k, v in ops.items()}


def _call_counts(b) -> Counter:
    """Memory words and arithmetic of one call binding (module docstring)."""
    c: Counter = Counter()
    name, n = op_name(b.value), _numel(b.var.ty)
    if name in VIEWS or n is None:
        return c
    args = _tensors(b.value)
    if args and all(isinstance(a, Constant) for a in args):
        return c  # folded to a constant at build time
    words = sum((_numel(a.ty) or 0) * _bits(str(a.ty.dtype)) for a in args) + n * _bits(str(b.var.ty.dtype))
    c["mem_words"] += words / 32
    out_kind = _kind(str(b.var.ty.dtype)) if str(b.var.ty.dtype) != "bool" else None
    in_kind = _kind(str(args[0].ty.dtype)) if args else out_kind
    if name in ("relax.matmul", "relax.nn.conv2d") and len(args) == 2:
        k = _reduction_length(name, args)
        c[f"{in_kind}_mul"] += n * k
        c[f"{out_kind}_add"] += n * k
    elif name in REDUCTIONS:
        c[f"{in_kind}_add"] += sum(_numel(a.ty) or 0 for a in args[:1])
    elif name not in MEMORY_ONLY:
        muls, adds = _ELEMENTWISE.get(name, (1, 0) if name in MULTIPLY else (0, 1))
        kind = out_kind if (muls or name in _ELEMENTWISE) else (out_kind or in_kind)
        c[f"{kind}_mul"] += muls * n
        c[f"{kind}_add"] += adds * n
    return +c  # drop the zero entries


def _reduction_length(name: str, args: list) -> int:
    """Multiply-adds per output element of a matmul (K) or a conv2d (C_in x kernel)."""
    if name == "relax.matmul":
        return int(args[0].ty.shape.values[-1])
    return int(np.prod([int(d) for d in args[1].ty.shape.values[1:]]))


def _price(table: dict, key: str) -> float:
    if key in table:
        return float(table[key])
    kind, op = key.split("_")
    return float(table[f"fp32_{op}" if kind.startswith("fp") else f"int32_{op}"])


def estimate(counts: Counter, table: dict) -> dict:
    """Energy in microjoules (``total_uj``, ``compute_uj``, ``memory_uj``) and the counts."""
    compute = sum(_price(table, k) * v for k, v in counts.items() if k != "mem_words")
    memory = float(table["mem_read_32b"]) * counts.get("mem_words", 0)
    return {
        "total_uj": round((compute + memory) * 1e-6, 4),
        "compute_uj": round(compute * 1e-6, 4),
        "memory_uj": round(memory * 1e-6, 4),
        "counts": {k: int(v) for k, v in sorted(counts.items())},
        "table": "target profile energy (pJ per op)",
    }


def model_energy(mod, table: dict) -> dict:
    """:func:`estimate` for a module's ``main``."""
    return estimate(count_ops(mod["main"], mod), table)
