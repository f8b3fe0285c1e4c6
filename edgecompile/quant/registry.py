"""Which handler emits each kind of layer in integers, per recipe: a table layer kind ->
:data:`edgecompile.quant.rewriter.Handler` (ONNX Runtime's ``quantization/registry.py``, op type ->
quantizer, is the model). A kind without a handler stays float.

- :data:`INT8`: linear layers, activation matmuls, adds of two integer tensors, embeddings
  (:mod:`edgecompile.quant.int8`);
- :data:`INTEGER_ONLY`: :data:`INT8` with the integer-only add and embedding in place of its own, plus
  concat, softmax, GELU, LayerNorm and tanh (:mod:`edgecompile.quant.integer_only`).

A new integer op is a handler function and an entry here.
"""

from __future__ import annotations

from edgecompile.quant import int8, integer_only
from edgecompile.quant.options import NONLINEAR_KINDS
from edgecompile.quant.rewriter import Handler

INT8: dict[str, Handler] = {
    "linear": int8.linear,
    "matmul": int8.matmul,
    "add": int8.add,
    "embedding": int8.embedding,
}

INTEGER_ONLY: dict[str, Handler] = {
    **INT8,
    "add": integer_only.add,
    "embedding": integer_only.embedding,
    "concat": integer_only.concat,
    "softmax": integer_only.softmax,
    "gelu": integer_only.gelu,
    "layernorm": integer_only.layernorm,
    "tanh": integer_only.tanh,
}


def handlers(nonlinear: dict[str, str] | None = None) -> dict[str, Handler]:
    """The table of a recipe: :data:`INT8`, or with ``nonlinear`` (integer-only: op ->
    implementation) :data:`INTEGER_ONLY` less the nonlinears it keeps in float."""
    if not nonlinear:
        return dict(INT8)
    floats = {kind for kind in NONLINEAR_KINDS if nonlinear.get(kind, "float") == "float"}
    return {kind: handler for kind, handler in INTEGER_ONLY.items() if kind not in floats}
