"""The contract between a recipe stage, the recipe registry (:mod:`edgecompile.recipe`) and
:func:`edgecompile.api.compile`.

A **stage** is what one recipe preset does to the Relax module. It has the same shape in every
stage package (``quant/``, ``lowrank/``, ``hashattn/``, ``half/``):

- ``options.py``: a frozen dataclass of the preset's options, validated in ``__post_init__``,
  built from the recipe part's ``key=value`` strings by ``from_options`` (errors are
  :class:`edgecompile.errors.RecipeError`); it imports neither TVM nor numpy, so parsing a recipe
  stays cheap;
- ``plan``: calibrate and decide (which layers, which scales, which ranks), on the calibration
  samples of :class:`StageContext`;
- ``rewrite``: the IRModule -> IRModule rewrite the plan chose;
- ``stage.py``: the :class:`Stage` object the registry maps the preset to.

Stages never import the backends (``lower``, ``coreml``) or the artifact code: what they need of
the target (a build for this machine to run calibration on, a build for the target to time a
kernel, the GEMM tile width) arrives in the :class:`StageContext` that ``api.compile`` fills.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _quiet(*_args) -> None:
    return None


@dataclass
class StageContext:
    """What a stage may use besides the module: the inputs, the calibration samples, builds and
    facts of the target, and where progress goes. Filled once per compile by ``api.compile``."""

    input_names: list[str]
    samples: list[dict] | None  # calibration samples ({input name: array}); None: no --calib
    profile: Any  # the resolved edgecompile.targets.TargetProfile
    host_build: Callable[[Any], Any]  # IRModule -> executable for this machine (calibration runs)
    target_build: Callable[[Any], Any] = None  # IRModule -> executable for the target (speed gates)
    gemm_tile: int = 8  # the target's GEMM register tile width (output columns of one micro-kernel)
    say: Callable[[str], None] = _quiet  # one line of progress ("calibrating on 32 samples")
    progress: Callable[[str, int, int], None] = _quiet  # (stage, done, total) of long loops
    results: dict[str, Any] = field(default_factory=dict)  # preset -> the stage's full result object
    padding: Any = None  # a ranged compile's edgecompile.calibrate.padding.Padding: what of the samples is padding


@dataclass(frozen=True)
class Stage:
    """One recipe preset: its name, help, options and how it rewrites the module.

    ``order`` places the stage in the pipeline: a recipe lists its parts in increasing order
    (``lowrank`` 10 < ``hash-attention`` 20 < ``int8``/``int8-integer-only``/``fp16`` 30), because
    each later stage works on what the earlier ones produced (int8 quantizes both low-rank factors;
    hash attention is learned on float activations). ``exclusive`` names presets it cannot be
    combined with. ``apply(mod, options, ctx)`` returns the rewritten module and the manifest entry
    stored under ``manifest_key`` (None: nothing to record)."""

    preset: str
    description: str
    options_help: dict[str, str]
    parse: Callable[[dict[str, str]], Any]
    apply: Callable[[Any, Any, StageContext], tuple[Any, dict | None]]
    order: int
    manifest_key: str | None = None
    missing_calib: Callable[[], Exception] | None = None  # the error when run without samples (None: runs without)
    uses_calib: bool = False  # reads calibration samples where given
    exclusive: tuple[str, ...] = ()
    exclusive_why: str = ""  # what to do instead, said when a recipe combines it with an excluded preset
    coreml: bool = False  # applied before the Core ML export (the others are the export's own)

    @property
    def needs_calib(self) -> bool:
        return self.missing_calib is not None


def options_parser(module: str, cls: str) -> Callable[[dict[str, str]], Any]:
    """``parse`` of a stage whose options class ``module.cls`` has ``from_options``; imported on first
    use, so the registry costs nothing until a recipe is parsed."""

    def parse(options: dict[str, str]) -> Any:
        return getattr(importlib.import_module(module), cls).from_options(options)

    return parse


def planned(module: str, function: str, doing: str, key: str) -> Callable[[Any, Any, StageContext], tuple]:
    """``apply`` of a stage whose plan is ``module.function(mod, ctx, options)``, returning a result
    with ``mod`` and ``to_json(options)``: says ``doing (options.spec)``, keeps the result in
    ``ctx.results[key]``."""

    def apply(mod, options, ctx: StageContext) -> tuple:
        plan = getattr(importlib.import_module(module), function)
        ctx.say(f"{doing} ({options.spec})")
        result = plan(mod, ctx, options)
        ctx.results[key] = result
        return result.mod, result.to_json(options)

    return apply


def option_value(part: str, options: dict[str, str], key: str, convert: Callable[[str], Any], default: Any) -> Any:
    """``convert(options[key])`` (``default`` when absent); a value it refuses is a ``RecipeError``
    naming the recipe ``part``, the option and the value."""
    from edgecompile.errors import RecipeError

    if key not in options:
        return default
    try:
        return convert(options[key])
    except ValueError:
        kind = {float: "a number", int: "a whole number"}.get(convert, "valid")
        raise RecipeError(f"{part}: option {key}={options[key]!r} is not {kind}") from None
