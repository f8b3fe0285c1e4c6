"""The ``hash-attention`` recipe part's options (see :data:`edgecompile.hashattn.stage.OPTIONS`; no
TVM or numpy: parsing a recipe stays cheap)."""

from __future__ import annotations

from dataclasses import dataclass

from edgecompile.errors import RecipeError

OFF = ("0", "false", "no", "off")


@dataclass(frozen=True)
class HashOptions:
    bits: int = 16
    anchors: int = 25
    topk: int = 10
    layers: str = "auto"  # auto | all | names separated by ';'
    min_seq: int = 512
    max_drop: float = 0.01  # fraction
    iters: int = 100
    key_bias: bool = True  # weights exp(k_j . g) (h_i . h_j + c): the keys' shared popularity apart from the bits
    global_queries: int = 1  # query positions per block computed with exact softmax (the worst in calibration)

    def __post_init__(self):
        if not 1 <= self.bits <= 31:
            raise RecipeError(f"hash-attention: bits must be 1..31 (one int32 word per token), got {self.bits}")
        if self.anchors < 2 or self.topk < 1 or self.min_seq < 0 or self.iters < 0 or not 0 <= self.max_drop <= 1:
            raise RecipeError("hash-attention: anchors >= 2, topk >= 1, min_seq >= 0, iters >= 0, max_drop in 0..100%")
        if self.global_queries < 0:
            raise RecipeError(f"hash-attention: global_queries must be >= 0, got {self.global_queries}")

    @property
    def spec(self) -> str:
        return (
            f"bits={self.bits} anchors={self.anchors} topk={self.topk} layers={self.layers} "
            f"min_seq={self.min_seq} max_drop={self.max_drop * 100:g}% global_queries={self.global_queries}"
        )

    @classmethod
    def from_options(cls, options: dict[str, str]) -> HashOptions:
        """The recipe part's ``key=value`` strings; a malformed number is a :class:`RecipeError`."""
        try:
            raw = options.get("max_drop", "1%")
            drop = float(raw.rstrip("%")) / 100 if raw.endswith("%") else float(raw)
            values = {
                "bits": int(options.get("bits", 16)),
                "anchors": int(options.get("anchors", 25)),
                "topk": int(options.get("topk", 10)),
                "layers": options.get("layers", "auto"),
                "min_seq": int(options.get("min_seq", 512)),
                "max_drop": drop,
                "iters": int(options.get("iters", 100)),
                "key_bias": options.get("key_bias", "1").lower() not in OFF,
                "global_queries": int(options.get("global_queries", 1)),
            }
        except ValueError as e:
            raise RecipeError(f"hash-attention: malformed option value ({e})") from e
        return cls(**values)
