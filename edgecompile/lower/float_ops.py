"""Which kernels of a compiled model still do floating-point arithmetic, and why.

The module is lowered and fused exactly as the build does (:func:`edgecompile.lower.pipeline.fusion_passes`
on CPU targets), and every fused kernel's TIR is searched for arithmetic on float values: a float
add/sub/mul/div/min/max, a float comparison, a math call (exp, erf, round, ...) or a cast to or
from a float type. Moving float data (reshape, transpose, gather) is not arithmetic.

Each such kernel gets a role from where it sits in ``main``:

- ``input quantize``: it reads only model inputs, directly or through kernels that themselves read
  only model inputs and scalar constants: quantizing an image to int8, or building an attention
  mask's float offsets from the 0/1 mask and quantizing them to integer logit offsets;
- ``output dequantize``: it reads no float tensor other than constants (scales) and writes a model
  output;
- ``float op``: anything else, arithmetic on float values inside the model.

The integer-only recipes promise that only the first two roles appear.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax
from tvm.ir.expr import Constant

ARITH = {"Add", "Sub", "Mul", "Div", "FloorDiv", "FloorMod", "Mod", "Min", "Max", "Call"}
COMPARE = {"LT", "LE", "GT", "GE", "EQ", "NE"}
SKIP_FIELDS = {"span", "ty"}


def _is_float(dtype) -> bool:
    return str(dtype).startswith(("float", "bfloat"))


def _dtype(node) -> str:
    return str(getattr(getattr(node, "ty", None), "dtype", ""))


def _fields(cls) -> list[str]:
    info, names = getattr(cls, "__tvm_ffi_type_info__", None), []
    while info is not None:
        names += [f.name for f in info.fields if f.name not in SKIP_FIELDS]
        info = info.parent_type_info
    return names


def _nodes(root):
    """Every IR node under ``root`` (TVM 0.27 has no Python TIR visitor: walk the reflected fields)."""
    stack = [root]
    while stack:
        n = stack.pop()
        if isinstance(n, (tvm_ffi.Array, list, tuple)):
            stack.extend(n)
        elif isinstance(n, tvm_ffi.core.Object) and not isinstance(n, tvm_ffi.Map):
            yield n
            for name in _fields(type(n)):
                try:
                    stack.append(getattr(n, name))
                except Exception:  # noqa: BLE001 - a field without a Python getter
                    continue


def float_arith(func) -> list[str]:
    """The kinds of float arithmetic in the PrimFunc ``func`` (e.g. ``['Cast', 'Mul']``)."""
    found: set[str] = set()
    for node in _nodes(func.body):
        name = type(node).__name__
        if name in ARITH and _is_float(_dtype(node)):
            found.add(f"Call:{getattr(node.op, 'name', node.op)}" if name == "Call" else name)
        elif name in COMPARE and _is_float(_dtype(node.a)):
            found.add(name)
        elif name == "Cast" and (_is_float(_dtype(node)) or _is_float(_dtype(node.value))):
            found.add("Cast")
    return sorted(found)


def _fused(mod: tvm.IRModule, target) -> tvm.IRModule:
    from edgecompile.lower.pipeline import fusion_passes, gpu_fusion_passes

    with target:
        passes = fusion_passes(target) if target.kind.name == "llvm" else gpu_fusion_passes()
        return tvm.transform.Sequential(passes)(mod)


def float_kernels(mod: tvm.IRModule, target) -> list[dict]:
    """:func:`float_kernels_of` ``mod`` fused as the build fuses it for ``target`` (for targets
    whose build does not hand its fused module over: the CPU build does, see
    :func:`edgecompile.lower.build.compile_module`'s ``on_fused``)."""
    return float_kernels_of(_fused(mod, target))


def float_kernels_of(fused: tvm.IRModule) -> list[dict]:
    """Every kernel of the fused module with float arithmetic: name, role, the kinds of float
    arithmetic, and its input/output dtypes; in call order."""
    main = fused["main"]
    params = set(main.params)
    outputs = set(relax.analysis.free_vars(main.body.body))
    for b in _bindings(main):  # a returned tuple: its fields are the outputs
        if b.var in outputs and isinstance(b.value, relax.Tuple):
            outputs |= {f for f in b.value.fields if isinstance(f, relax.Var)}
    front = set(params)  # tensors computed from the inputs alone
    rows = []
    for b in _bindings(main):
        value = b.value
        if isinstance(value, relax.Var):
            if value in front:
                front.add(b.var)
            continue
        if not isinstance(value, relax.Call) or value.op != tvm.ir.Op.get("relax.call_tir"):
            continue
        gv, args = value.args[0], list(value.args[1].fields)
        var_args = [a for a in args if isinstance(a, relax.Var)]
        big_consts = [a for a in args if isinstance(a, Constant) and a.value.numpy().size > 1]
        from_inputs = all(a in front for a in var_args) and not big_consts
        if from_inputs:
            front.add(b.var)
        kinds = float_arith(fused[gv])
        if not kinds:
            continue
        in_types = [str(a.ty.dtype) for a in args if isinstance(a.ty, relax.TensorType)]
        out_type = str(b.var.ty.dtype) if isinstance(b.var.ty, relax.TensorType) else "tuple"
        if from_inputs:
            role = "input quantize"
        elif b.var in outputs and not any(_is_float(a.ty.dtype) for a in var_args):  # scales are constants
            role = "output dequantize"
        else:
            role = "float op"
        rows.append({"kernel": gv.name_hint, "role": role, "float": kinds, "in": in_types, "out": out_type})
    return rows


def _bindings(func):
    for block in func.body.blocks:
        yield from block.bindings
