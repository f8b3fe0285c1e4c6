"""PyTorch import: ``torch.export`` a module (or load a saved ``.pt2``) and convert it with
TVM's ``from_exported_program``. torch is imported lazily; it is an optional extra. Every gather
is bounded in the imported module (:class:`edgecompile.passes.bounded_gather.BoundGathers`).

Input names are the ``forward`` parameter names. Without ``example_inputs``, every input needs a
shape (``input_shapes``); dtypes default to float32. Floats are random normal and integers zeros,
which is only used for tracing: shapes are static, values do not matter.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from edgecompile.errors import BuildError, InputSpecError, ModelLoadError
from edgecompile.frontend.spec import TensorSpec


def _require_torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ModelLoadError("compiling a PyTorch module needs torch: pip install 'edgecompile[torch]'") from e
    return torch


def example_args(module, input_shapes: dict, input_dtypes: dict) -> dict:
    """Build named example tensors for ``module.forward`` from shapes and dtypes."""
    torch = _require_torch()
    params = [
        p
        for p in inspect.signature(module.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    names = [p.name for p in params if p.default is inspect.Parameter.empty or p.name in input_shapes]
    unknown = sorted(set(input_shapes) - set(names))
    if unknown:
        raise InputSpecError(
            f"the module's forward() has no input named '{unknown[0]}'; its inputs are: {', '.join(names)}"
        )
    out = {}
    gen = torch.Generator().manual_seed(0)
    for name in names:
        if name not in input_shapes:
            raise InputSpecError(
                f"input '{name}' of the PyTorch module has no shape; give input_shapes={{'{name}': (1, 128)}} "
                "or example_inputs"
            )
        dtype = getattr(torch, input_dtypes.get(name, "float32"), None)
        if not isinstance(dtype, torch.dtype):
            raise InputSpecError(f"unknown dtype '{input_dtypes.get(name)}' for input '{name}'")
        shape = tuple(input_shapes[name])
        if dtype.is_floating_point:
            out[name] = torch.randn(shape, generator=gen).to(dtype)
        else:
            out[name] = torch.zeros(shape, dtype=dtype)
    return out


def export(module, example_inputs):
    """``torch.export`` the module in eval mode; example_inputs is a tuple or a name->tensor dict."""
    torch = _require_torch()
    module = module.eval()
    args, kwargs = (
        (tuple(example_inputs), {}) if isinstance(example_inputs, (tuple, list)) else ((), dict(example_inputs))
    )
    try:
        with torch.no_grad():
            return torch.export.export(module, args, kwargs)
    except Exception as e:
        raise ModelLoadError(f"torch.export failed: {type(e).__name__}: {str(e).strip().splitlines()[0]}") from e


def load_exported(path: Path):
    torch = _require_torch()
    try:
        return torch.export.load(str(path))
    except Exception as e:
        raise ModelLoadError(f"cannot load the exported program {path}: {e}") from e


def exported_to_relax(ep):
    """Convert an ExportedProgram; returns (IRModule, input specs)."""
    torch = _require_torch()
    from tvm.relax.frontend.torch import from_exported_program

    from edgecompile.passes.bounded_gather import BoundGathers

    specs = []
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    for spec in ep.graph_signature.input_specs:
        if spec.kind.name != "USER_INPUT":
            continue
        node = placeholders[spec.arg.name]
        val = node.meta.get("val")
        if val is None or not isinstance(val, torch.Tensor):
            raise InputSpecError(f"input '{spec.arg.name}' is not a tensor; only tensor inputs are supported")
        if any(not isinstance(d, int) for d in val.shape):
            raise InputSpecError(f"input '{spec.arg.name}' has a dynamic shape; export with static shapes")
        specs.append(TensorSpec(spec.arg.name, tuple(int(d) for d in val.shape), str(val.dtype).removeprefix("torch.")))
    try:
        mod = from_exported_program(ep, keep_params_as_input=False, unwrap_unit_return_tuple=True)
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise BuildError(f"the PyTorch importer failed: {type(e).__name__}: {msg[-1] if msg else ''}") from e
    return BoundGathers()(mod), specs
