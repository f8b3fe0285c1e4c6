"""The ``lowrank`` recipe part's options: one budget, ``layers=ffn|all-linear``, ``multiple``,
``refit=true|false``, ``gate=auto|measure|estimate|off`` (no TVM or numpy: parsing a recipe stays
cheap)."""

from __future__ import annotations

from dataclasses import dataclass

from edgecompile.errors import RecipeError

BUDGETS = ("ratio", "rank", "energy", "max_drop", "speedup")
LAYERS = ("ffn", "all-linear")
GATES = ("auto", "measure", "estimate", "off")
LIMITS = {"ratio": (0, 1), "energy": (0, 1), "max_drop": (0, 1), "rank": (1, 1e9), "speedup": (1, 100)}


@dataclass(frozen=True)
class LowRankOptions:
    budget: str = "ratio"
    value: float = 0.5
    layers: str = "ffn"
    multiple: int = 0  # 0: the target's GEMM tile width (ranks that fill whole register tiles)
    refit: bool = True
    gate: str = "auto"  # measure (this machine) | estimate (multiply-adds) | off | auto

    def __post_init__(self):
        if self.layers not in LAYERS:
            raise RecipeError(f"lowrank: layers must be ffn or all-linear, got '{self.layers}'")
        if self.gate not in GATES:
            raise RecipeError(f"lowrank: gate must be auto, measure, estimate or off, got '{self.gate}'")

    @property
    def spec(self) -> str:
        v = f"{self.value * 100:g}%" if self.budget == "max_drop" else f"{self.value:g}"
        return f"{self.budget}={v}"

    @classmethod
    def from_options(cls, options: dict[str, str]) -> LowRankOptions:
        """The recipe part's ``key=value`` strings (see :data:`edgecompile.lowrank.stage.OPTIONS`)."""
        given = [b for b in BUDGETS if b in options]
        if len(given) > 1:
            raise RecipeError(f"lowrank: give one budget, not {' and '.join(given)}")
        budget = given[0] if given else "ratio"
        raw = options.get(budget, "0.5")
        try:
            value = float(raw.rstrip("%")) / 100 if raw.endswith("%") else float(raw)
            multiple = int(options.get("multiple", 0))
        except ValueError as e:
            raise RecipeError(f"lowrank: malformed option value ({e})") from e
        lo, hi = LIMITS[budget]
        if not (lo < value <= hi if budget != "rank" else lo <= value):
            raise RecipeError(f"lowrank: {budget}={raw} is out of range")
        layers = options.get("layers", "ffn")
        refit = options.get("refit", "true").lower() not in ("false", "0", "no", "off")
        gate = options.get("gate", "auto")
        return cls(budget, value, layers, max(0, multiple), refit, gate)
