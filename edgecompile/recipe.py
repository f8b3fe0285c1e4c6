"""Recipes: which rewrites to apply, in order, with their options.

On the command line a recipe is ``PART[+PART...]`` where ``PART`` is
``preset[:key=value[,key=value...]]``; ``--recipe FILE.toml`` holds the same as
``[[part]]`` tables with a ``preset`` key. The parsed recipe is recorded in the manifest.
Presets are registered in :data:`PRESETS` with the options they accept; passes added by later
work register their presets here.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgecompile.errors import RecipeError


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    options: dict[str, str] = field(default_factory=dict)  # option -> help


PRESETS: dict[str, Preset] = {
    "fp32": Preset("fp32", "the float model as exported, no rewrite"),
    "fp16": Preset(
        "fp16",
        "float16 matmuls with float32 accumulation (GPU targets' tensor cores; CPUs compile it through "
        "conversions); on Core ML, float16 everywhere, and fp16+int8 gives int8 weights with float16 activations",
    ),
    "int8": Preset(
        "int8",
        "int8 post-training quantization: integer linear layers and matmuls, dyadic requantization (needs --calib)",
        {
            "observer": "activation range observer: minmax, percentile (default), mse or entropy",
            "percentile": "percentile of |x| for the percentile observer (default 99.99)",
            "samples": "calibration samples to use (default: all given)",
            "keep_float": "layers to leave in float, names or patterns separated by ';' (e.g. linear.0;matmul.*)",
            "keep_worst": "keep the k layers with the lowest SQNR in float (default 0)",
            "smooth": "SmoothQuant strength alpha for linear inputs, per-channel ranges moved into the weights: "
            "auto (default: chosen per tensor from calibration statistics), a number in [0, 1], or 0 (off)",
        },
    ),
}

_NONLINEAR_OPTIONS = {
    "ops": "the integer nonlinears: ivit (Shiftmax, ShiftGELU, I-LayerNorm; default) or ibert (i-exp softmax, "
    "i-GELU, integer-sqrt LayerNorm); also written as a bare word, int8-integer-only:ibert",
    "softmax": "per-op override: ivit, ibert or float",
    "gelu": "per-op override: ivit, ibert or float (erf and tanh forms)",
    "layernorm": "per-op override: ivit, ibert or float",
    "tanh": "per-op override: ivit (ShiftExp sigmoid) or float",
}
PRESETS["int8-integer-only"] = Preset(
    "int8-integer-only",
    "int8 with integer-only softmax, GELU, LayerNorm and tanh: no float arithmetic between the input "
    "quantize and the output dequantize (needs --calib)",
    {**PRESETS["int8"].options, **_NONLINEAR_OPTIONS},
)
PRESETS["lowrank"] = Preset(
    "lowrank",
    "low-rank factorization of linear layers (whitened SVD from --calib, least-squares refit), ranks "
    "under one budget, a layer kept dense where factorized is not faster on the target; compose with "
    "int8 as lowrank:ratio=0.5+int8",
    {
        "ratio": "parameter ratio of each factorized layer to its break-even rank (default 0.5)",
        "rank": "one rank for every layer",
        "energy": "keep this fraction of each layer's whitened spectrum energy (e.g. 0.95)",
        "max_drop": "accuracy budget on the calibration set, e.g. 1% (top-1 changes, or relative output error)",
        "speedup": "latency budget: the factorizable layers together this many times faster (e.g. 1.5)",
        "layers": "ffn (default: FFN up/down projections) or all-linear",
        "multiple": "ranks are multiples of this (default: the target GEMM tile width, 24 on AVX2)",
        "refit": "least-squares refit of the outer factor on the calibration set (default true)",
        "gate": "speed gate: measure (this machine), estimate (multiply-adds), off; default: measure "
        "for this machine's CPU targets",
    },
)
PRESETS["hash-attention"] = Preset(
    "hash-attention",
    "binary-hash attention (EcoFormer, learned post-training from --calib): softmax attention blocks "
    "become linear attention on packed b-bit codes where the model's output allows; compose as "
    "hash-attention+int8",
    {
        "bits": "code bits per token, 1..31 (default 16)",
        "anchors": "RBF anchors per head (default 25)",
        "topk": "top/bottom keys per query in the hash's target (default 10)",
        "layers": "auto (default: the gate converts blocks while the output stays within max_drop), all, or "
        "names separated by ';' (attn.0;attn.2)",
        "min_seq": "blocks with fewer tokens keep softmax (default 512)",
        "max_drop": "the gate's budget on the model's output on held-out calibration samples (default 1%)",
        "iters": "Adam steps per bit of the hash fit (default 100)",
        "global_queries": "query positions per block kept on exact softmax attention over all keys, those the "
        "hash served worst in calibration (default 1: a ViT's class token; 0: none)",
    },
)
# A bare word after a preset's colon is shorthand for one of its options: ``int8-integer-only:ibert``.
FLAVORS: dict[str, tuple[str, tuple[str, ...]]] = {"int8-integer-only": ("ops", ("ivit", "ibert"))}


@dataclass
class RecipePart:
    preset: str
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.preset}:{opts}" if opts else self.preset


@dataclass
class Recipe:
    parts: list[RecipePart]

    def __str__(self) -> str:
        return "+".join(str(p) for p in self.parts)

    def to_json(self) -> dict:
        return {"spec": str(self), "parts": [{"preset": p.preset, "options": p.options} for p in self.parts]}

    def part(self, preset: str) -> RecipePart | None:
        """The recipe's part for ``preset``, if it has one."""
        return next((p for p in self.parts if p.preset == preset), None)

    def quant_part(self) -> RecipePart | None:
        """The quantizing part (``int8`` or ``int8-integer-only``), if any."""
        return self.part("int8") or self.part("int8-integer-only")


def _check_part(part: RecipePart) -> RecipePart:
    preset = PRESETS.get(part.preset)
    if preset is None:
        near = difflib.get_close_matches(part.preset, PRESETS, n=3, cutoff=0.4)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        raise RecipeError(f"unknown recipe preset '{part.preset}'{hint} (known: {', '.join(PRESETS)})")
    for key in part.options:
        if key not in preset.options:
            known = ", ".join(preset.options) or "none"
            raise RecipeError(f"recipe preset '{part.preset}' has no option '{key}' (its options: {known})")
    return part


def parse_recipe(text: str | Path | None) -> Recipe:
    """Parse a recipe string (``fp32``, ``a:k=v+b``) or a ``.toml`` recipe file."""
    if text is None or str(text).strip() == "":
        text = "fp32"
    s = str(text)
    if s.endswith(".toml"):
        return _parse_file(Path(s))
    parts = []
    for chunk in s.split("+"):
        name, _, opts = chunk.strip().partition(":")
        options = {}
        for kv in filter(None, (o.strip() for o in opts.split(","))):
            k, sep, v = kv.partition("=")
            flavor = FLAVORS.get(name.strip())
            if not sep and flavor and kv in flavor[1]:
                k, sep, v = flavor[0], "=", kv
            if not sep or not k:
                raise RecipeError(f"malformed recipe option '{kv}' in '{chunk}': write key=value")
            options[k.strip()] = v.strip()
        parts.append(_check_part(RecipePart(name.strip(), options)))
    return Recipe(parts)


def _parse_file(path: Path) -> Recipe:
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"malformed recipe file {path}: {e}") from e
    tables = data.get("part")
    if not isinstance(tables, list) or not tables:
        raise RecipeError(f"recipe file {path} needs at least one [[part]] table with a 'preset'")
    parts = []
    for t in tables:
        if "preset" not in t:
            raise RecipeError(f"a [[part]] in {path} lacks 'preset'")
        parts.append(_check_part(RecipePart(str(t["preset"]), {k: str(v) for k, v in t.items() if k != "preset"})))
    return Recipe(parts)
