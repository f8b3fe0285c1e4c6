"""Op coverage of an ONNX model, before compiling.

Each node's op is resolved to the op version its opset selects (``since_version``) and looked up
in ``onnx_support.json``, the ONNX conformance results for that op version (see
:mod:`edgecompile.frontend.conformance`). Statuses:

- ``supported``: TVM has a converter and every conformance case of this op version passes (for a
  node whose extra outputs are unused, the cases restricted to the first output);
- ``partial``: some cases pass, some fail (``failing`` names them: usually a dtype or attribute
  the importer lacks); the model may still compile;
- ``failing``: a converter exists but no conformance case passes;
- ``untested``: a converter exists but onnx ships no case for this op version;
- ``unsupported``: no converter, or an op whose output shape depends on input values
  (``NonMaxSuppression``, ``NonZero``, ``Unique``, ``Compress``: TVM converts them, but a compile
  needs static output shapes); compiling fails with the node names.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

SUPPORT_FILE = Path(__file__).with_name("onnx_support.json")


@dataclass
class OpCoverage:
    op_type: str
    version: int | None
    status: str
    nodes: list[str] = field(default_factory=list)
    passed: int = 0
    total: int = 0
    failing: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return self.__dict__.copy()


@lru_cache(maxsize=1)
def load_table() -> dict:
    """The conformance table: ``{"ops": {"Op@version": {"passed", "total", "failing"}}, ...}``."""
    if not SUPPORT_FILE.is_file():
        return {"ops": {}}
    return json.loads(SUPPORT_FILE.read_text())


def classify(
    op_type: str, version: int | None, has_converter: bool, first_output_only: bool = False
) -> tuple[str, dict]:
    """Status and conformance entry of an op version; ``first_output_only`` when the node's other
    outputs are unused (then the ``Op@version#0`` evidence applies where it exists)."""
    if not has_converter:
        return "unsupported", {}
    table = load_table()["ops"]
    entry = table.get(f"{op_type}@{version}#0") if first_output_only else None
    entry = entry or table.get(f"{op_type}@{version}")
    if entry is None:
        return "untested", {}
    if entry["passed"] == entry["total"]:
        return "supported", entry
    return ("partial" if entry["passed"] else "failing"), entry


def coverage(model) -> list[OpCoverage]:
    """One :class:`OpCoverage` per (op type, version) used by the model's top-level graph."""
    import onnx.defs

    from edgecompile.frontend.onnx_checks import DATA_DEPENDENT_OPS
    from edgecompile.frontend.onnx_import import DEFAULT_DOMAINS, importable_ops, model_opset

    opset = model_opset(model)
    converters = importable_ops() - DATA_DEPENDENT_OPS
    consumed = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    groups: OrderedDict[tuple[str, str, bool], list[str]] = OrderedDict()
    for i, node in enumerate(model.graph.node):
        first_only = all(not o or o not in consumed for o in node.output[1:])
        groups.setdefault((node.domain, node.op_type, first_only), []).append(node.name or f"#{i}")
    out = []
    for (domain, op, first_only), nodes in groups.items():
        if domain not in DEFAULT_DOMAINS:
            out.append(OpCoverage(f"{domain}::{op}", None, "unsupported", nodes))
            continue
        try:
            version = int(onnx.defs.get_schema(op, opset, "").since_version)
        except Exception:
            out.append(OpCoverage(op, None, "unsupported", nodes))
            continue
        status, entry = classify(op, version, op in converters, first_only)
        out.append(
            OpCoverage(
                op, version, status, nodes, entry.get("passed", 0), entry.get("total", 0), entry.get("failing", [])
            )
        )
    return out
