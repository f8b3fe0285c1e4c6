"""Frontends: turn an ONNX file, an ONNX ModelProto, a ``torch.nn.Module`` or a saved
``torch.export`` program (``.pt2``) into a Relax IRModule with named, static inputs and outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgecompile.errors import InputSpecError, ModelLoadError
from edgecompile.frontend.spec import TensorSpec
from edgecompile.runtime.manifest import sha256_file


@dataclass
class ImportedModel:
    """A model in Relax with its input/output specs and where it came from."""

    mod: object  # tvm.IRModule
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source: dict = field(default_factory=dict)


def import_model(
    model,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    input_dtypes: dict[str, str] | None = None,
    example_inputs=None,
) -> ImportedModel:
    """Import ``model`` (path, ModelProto, nn.Module or ExportedProgram) into Relax."""
    input_shapes = {k: tuple(v) for k, v in (input_shapes or {}).items()}
    input_dtypes = dict(input_dtypes or {})
    if isinstance(model, (str, Path)):
        path = Path(model)
        if path.suffix == ".pt2":
            from edgecompile.frontend import torch_import

            if not path.is_file():
                raise ModelLoadError(f"model file not found: {path}")
            return _from_exported(
                torch_import.load_exported(path),
                {"frontend": "torch.export", "file": path.name, "sha256": sha256_file(path)},
            )
        from edgecompile.frontend import onnx_import

        proto = onnx_import.read_onnx(path)
        return _from_onnx(
            proto, input_shapes, input_dtypes, {"frontend": "onnx", "file": path.name, "sha256": sha256_file(path)}
        )
    kind = f"{type(model).__module__}.{type(model).__name__}"
    if kind == "onnx.onnx_ml_pb2.ModelProto" or type(model).__name__ == "ModelProto":
        return _from_onnx(model, input_shapes, input_dtypes, {"frontend": "onnx"})
    if kind.startswith("torch.export") and type(model).__name__ == "ExportedProgram":
        return _from_exported(model, {"frontend": "torch.export"})
    if _is_torch_module(model):
        from edgecompile.frontend import torch_import

        if example_inputs is None:
            example_inputs = torch_import.example_args(model, input_shapes, input_dtypes)
        elif input_shapes:
            raise InputSpecError("give either example_inputs or input_shapes for a PyTorch module, not both")
        ep = torch_import.export(model, example_inputs)
        return _from_exported(ep, {"frontend": "torch", "module": type(model).__name__})
    raise ModelLoadError(
        f"cannot compile a {kind}: pass an ONNX file path, an onnx.ModelProto, a torch.nn.Module "
        "or a torch.export.ExportedProgram"
    )


def _from_onnx(proto, shapes, dtypes, source) -> ImportedModel:
    from edgecompile.frontend import onnx_import
    from edgecompile.frontend.onnx_checks import check_opset, upgraded_opset

    shipped = onnx_import.model_opset(proto)
    proto = upgraded_opset(proto, shipped)
    opset = onnx_import.model_opset(proto)
    check_opset(opset)
    if shipped != opset:
        source["opset_shipped"] = shipped
    specs = onnx_import.resolve_input_specs(proto, shapes, dtypes)
    mod = onnx_import.onnx_to_relax(proto, specs)
    source["opset"] = opset
    return ImportedModel(mod, specs, output_specs(mod, onnx_import.output_names(proto)), source)


def _from_exported(ep, source) -> ImportedModel:
    from edgecompile.frontend import torch_import

    mod, specs = torch_import.exported_to_relax(ep)
    return ImportedModel(mod, specs, output_specs(mod, None), source)


def output_specs(mod, names: list[str] | None) -> list[TensorSpec]:
    """Specs of ``main``'s outputs, flattened; unnamed outputs are called output_0, output_1, …"""
    from tvm import relax

    leaves = []

    def walk(ty):
        if isinstance(ty, relax.TupleType):
            for f in ty.fields:
                walk(f)
        elif isinstance(ty, relax.TensorType):
            leaves.append(ty)
        else:
            raise InputSpecError(f"model output of type {type(ty).__name__} is not supported; outputs must be tensors")

    walk(mod["main"].ret_ty)
    if names is None or len(names) != len(leaves):
        names = [f"output_{i}" for i in range(len(leaves))]
    out = []
    for name, si in zip(names, leaves):
        if si.shape is None or not all(hasattr(d, "value") for d in si.shape.values):
            raise InputSpecError(f"output '{name}' has a dynamic shape; give static input shapes")
        out.append(TensorSpec(name, tuple(int(d.value) for d in si.shape.values), str(si.dtype)))
    return out


def _is_torch_module(obj) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)
