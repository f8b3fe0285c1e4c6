"""A Core ML package read back: the MIL op counts, stored weight dtypes and input/output features of
an ML Program spec, for the manifest's ``coreml`` section and the tests' structural checks (Linux
cannot run Core ML predictions)."""

from __future__ import annotations

from collections import Counter

import numpy as np


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


def features(feature_list) -> list[dict]:
    """``[{"name", "shape", "dtype"}]`` of a spec's ``description.input`` or ``description.output``."""
    from coremltools.proto import FeatureTypes_pb2

    dtypes = {v: k.lower() for k, v in FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.items()}
    return [
        {
            "name": f.name,
            "shape": [int(d) for d in f.type.multiArrayType.shape],
            "dtype": dtypes.get(f.type.multiArrayType.dataType, "?"),
        }
        for f in feature_list
    ]
