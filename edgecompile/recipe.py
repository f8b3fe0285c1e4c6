"""Recipes: which rewrites to apply, in order, with their options.

On the command line a recipe is ``PART[+PART...]`` where ``PART`` is
``preset[:key=value[,key=value...]]``; ``--recipe FILE.toml`` holds the same as
``[[part]]`` tables with a ``preset`` key. The parsed recipe is recorded in the manifest.
Each preset maps to its stage in :data:`STAGES` (the registry): the stage says which options it
accepts, parses them into its typed options, and where it stands in the pipeline. Parts are applied
in the order written; :meth:`Recipe.stages` refuses orders that make no sense (``int8+lowrank``:
the factors would not be quantized), duplicate parts and parts that exclude each other.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgecompile.errors import RecipeError
from edgecompile.half.stage import BF16, FP16, FP32
from edgecompile.hashattn.stage import HASH_ATTENTION
from edgecompile.ir.stage import Stage
from edgecompile.lowrank.stage import LOWRANK
from edgecompile.quant.stage import INT8, INT8_INTEGER_ONLY

# The stage registry: each preset maps to the stage object that carries its help, options, place in
# the pipeline and rewrite (:class:`edgecompile.ir.stage.Stage`). A new stage registers here.
STAGES: dict[str, Stage] = {s.preset: s for s in (FP32, FP16, BF16, INT8, INT8_INTEGER_ONLY, LOWRANK, HASH_ATTENTION)}

# A bare word after a preset's colon is shorthand for one of its options: ``int8-integer-only:ibert``.
FLAVORS: dict[str, tuple[str, tuple[str, ...]]] = {"int8-integer-only": ("ops", ("mixed", "ivit", "ibert"))}


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

    def stages(self, exclusive: bool = True) -> list[tuple[Stage, object]]:
        """Each part's stage with its parsed options, in the order written. Refuses a preset given
        twice, parts out of pipeline order and (``exclusive``: TVM targets) parts that exclude each
        other, each with what to write instead."""
        out: list[tuple[Stage, object]] = []
        for part in self.parts:
            stage = STAGES[part.preset]
            for prev, _ in out:
                if prev.preset == stage.preset:
                    raise RecipeError(
                        f"recipe {self}: '{stage.preset}' is given twice; merge its options into one part"
                    )
                if exclusive and (stage.preset in prev.exclusive or prev.preset in stage.exclusive):
                    why = stage.exclusive_why or prev.exclusive_why or "choose one"
                    raise RecipeError(f"recipe {self}: {prev.preset} and {stage.preset} do not combine here: {why}")
                if prev.order > stage.order:
                    raise RecipeError(
                        f"recipe {self}: {stage.preset} must come before {prev.preset} (each part works on what "
                        f"the earlier ones produced); write {stage.preset}+{prev.preset}"
                    )
            out.append((stage, stage.parse(part.options)))
        return out


def _check_part(part: RecipePart) -> RecipePart:
    stage = STAGES.get(part.preset)
    if stage is None:
        near = difflib.get_close_matches(part.preset, STAGES, n=3, cutoff=0.4)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        raise RecipeError(f"unknown recipe preset '{part.preset}'{hint} (known: {', '.join(STAGES)})")
    for key in part.options:
        if key not in stage.options_help:
            known = ", ".join(stage.options_help) or "none"
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
