"""Per-layer sensitivity of a quantized recipe and the automatic keep-float fix.

Sensitivity of a layer: the task metric's drop when only that layer is quantized (or rewritten
into integer-only ops) and everything else runs in float, measured on the first evaluation
samples with the module of :mod:`edgecompile.quant.layer_switch` (one build per recipe, one run
per layer and sample). Worst first. By default as many samples as one pass over the layers runs
in :data:`BUDGET_S` seconds, between :data:`MIN_SAMPLES` and :data:`MAX_SAMPLES` (the digits ViT:
32; all-MiniLM-L6-v2, 49 to 94 layers at 40-50 ms a run on 2 cores: 4); ``--sensitivity-samples N`` asks
for exactly N.

The fix: the recipe with the ``k`` most sensitive layers kept in float (``keep_float``) for the
smallest ``k`` whose drop on the whole evaluation set meets the budget, found by doubling ``k``
then bisecting (drops shrink as layers go back to float, though not strictly).
"""

from __future__ import annotations

from edgecompile.quant.sensitivity import MIN_SAMPLES, layer_sensitivity, smallest_fix
from edgecompile.recipe import parse_recipe

__all__ = ["BUDGET_S", "FIX_MAX_LAYERS", "MAX_SAMPLES", "MIN_SAMPLES", "layer_sensitivity", "smallest_fix",
           "with_kept_float"]

FIX_MAX_LAYERS = 16  # the fix keeps at most this many layers in float
MAX_SAMPLES = 32  # by default, sensitivity uses up to this many evaluation samples ...
BUDGET_S = 8.0  # ... as many as one pass over the layers runs in this many seconds on this machine


def with_kept_float(recipe: str, layers: list[str]) -> str:
    """``recipe`` with ``layers`` added to its quantizing part's ``keep_float``."""
    rec = parse_recipe(recipe)
    part = rec.quant_part()
    kept = [p for p in part.options.get("keep_float", "").split(";") if p]
    part.options["keep_float"] = ";".join([*kept, *(n for n in layers if n not in kept)])
    return str(rec)
