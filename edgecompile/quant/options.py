"""The options of the ``int8`` and ``int8-integer-only`` recipe parts: :class:`QuantOptions`, parsed
from the part's ``key=value`` strings and validated, and the integer-only op choices it draws on.

Imports neither TVM nor numpy, so parsing a recipe stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgecompile.errors import RecipeError
from edgecompile.ir.stage import option_value

# the activation range observers, as in edgecompile.calibrate.observers.OBSERVERS (a test checks)
OBSERVERS = ("minmax", "percentile", "mse", "entropy")
# activation scales: one per tensor from calibration, per row at run time, or chosen per layer
# (edgecompile.quant.act_choice)
ACT_MODES = ("auto", "static", "dynamic")
# the fidelity an accuracy budget (max_drop=) measures: edgecompile.quant.budget.FIDELITY
BUDGET_METRICS = ("cosine", "pearson")
# How the weights are rounded to int8 (edgecompile.quant.rounding). GPTQ is the default in both
# recipes: it lowers the error everywhere measured, at the same latency, for a longer compile.
# Measured (Zen 4, fidelity to fp32 min / mean), nearest -> gptq: real all-MiniLM-L6-v2, spam
# demo's 400 test emails, embedding cosine int8 0.99298 / 0.99752 -> 0.99699 / 0.99888,
# int8-integer-only 0.97740 / 0.99165 -> 0.98315 / 0.99265; DINOv2 ViT-S/14 of the zoo, Pearson
# over 12 crops, int8 0.9995 / 0.9998 -> 0.9996 / 0.9999, integer-only 0.9836 / 0.9947 -> 0.9861 /
# 0.9954 (compile 43 -> 61 s); PP-OCRv4 of the zoo: every text read as fp32 reads it with both.
ROUNDINGS = ("nearest", "gptq")

# Bias correction (edgecompile.quant.int8._corrected_bias) is on by default in int8 and off in the
# integer-only recipes. Measured (Zen 4, 1 thread): real all-MiniLM-L6-v2, spam demo, embedding
# cosine mean / min over 400 test emails against fp32: int8 0.99749 / 0.98885 -> 0.99752 / 0.99298,
# int8:act=static 0.99523 / 0.98431 -> 0.99590 / 0.99117, int8-integer-only 0.99165 / 0.97740 ->
# 0.99074 / 0.98171 (the mean drops); DINOv2 ViT-S/14 of the zoo, Pearson min / mean over 12 crops:
# int8 0.9996 / 0.9999 -> 0.9995 / 0.9998, int8:act=static 0.9935 / 0.9982 -> 0.9936 / 0.9981 (noise).
BIAS_CORRECTION = {"int8": True, "integer-only": False}

# the nonlinears the integer-only recipe can run in integers (see edgecompile.quant.integer_only),
# the implementations each accepts, and the flavors that choose them all at once (``ops=``): I-ViT's
# and I-BERT's ops as the papers have them, and ``mixed``, the default, I-ViT's Shiftmax, I-LayerNorm
# and ShiftExp tanh with I-BERT's i-GELU. Decision: ShiftGELU (x sigmoid(1.702 x) on an int8 input)
# is most of the integer-only recipe's loss on every real model measured, and I-BERT's i-GELU (an
# erf polynomial on a 16-bit input) removes it; the other two I-ViT ops cost no measurable fidelity
# against I-BERT's. Embedding cosine to fp32, mean / min (Zen 4): real all-MiniLM-L6-v2, spam demo's
# 400 test emails, ops=ivit 0.99265 / 0.98315, mixed 0.99681 / 0.99325, ibert 0.99683 / 0.99313;
# all-mpnet-base-v2 (zoo) ivit 0.9462 / 0.8904, ibert 0.9817 / 0.9590. Latency on the MiniLM (1
# thread, medians of 30, one process): ivit 14.0 ms, mixed 11.9 ms (noise: 15% between runs); ibert
# 16.8 ms against mixed 11.3 in another (I-BERT's softmax is the cost). I-ViT's own tracker reports
# ShiftGELU collapsing post-training on DeiT-B; IPTQ-ViT (2025) picks the approximation per layer,
# as the accuracy budget's swap rung does (edgecompile.quant.budget).
DEFAULT_FLAVOR = "mixed"
NONLINEAR_KINDS = ("softmax", "gelu", "layernorm", "tanh")
IMPLEMENTATIONS = {
    "softmax": ("ivit", "ibert", "float"),
    "gelu": ("ivit", "ibert", "float"),
    "layernorm": ("ivit", "ibert", "float"),
    "tanh": ("ivit", "float"),
}
FLAVORS = {
    "mixed": {"softmax": "ivit", "gelu": "ibert", "layernorm": "ivit", "tanh": "ivit"},
    "ivit": {"softmax": "ivit", "gelu": "ivit", "layernorm": "ivit", "tanh": "ivit"},
    "ibert": {"softmax": "ibert", "gelu": "ibert", "layernorm": "ibert", "tanh": "ivit"},
}


@dataclass(frozen=True)
class QuantOptions:
    """Options of the ``int8`` / ``int8-integer-only`` recipe part."""

    observer: str = "percentile"
    percentile: float = 99.99
    samples: int | None = None  # calibration samples to use (None: all given)
    keep_float: tuple[str, ...] = ()  # layer names or fnmatch patterns left in float
    # integer-only: op -> implementation ("ivit" | "ibert" | "float") for softmax, gelu, layernorm,
    # tanh, sorted by op; empty for ``int8``
    nonlinear: tuple[tuple[str, str], ...] = ()
    # SmoothQuant's migration strength alpha (None: chosen per tensor; 0: off), see
    # :func:`edgecompile.quant.smooth.smoothing_factors`
    smooth: float | None = None
    keep_worst: int = 0  # also keep the k layers with the lowest SQNR in float
    act: str = "auto"  # activation scales: auto | static | dynamic (edgecompile.quant.act_choice)
    dynamic: tuple[str, ...] = ()  # layer names or fnmatch patterns given run-time scales whatever act says
    max_drop: float | None = None  # accuracy budget, a drop of fidelity to fp32 (edgecompile.quant.budget)
    metric: str = "cosine"  # the budget's fidelity: cosine | pearson
    bias_correction: bool = BIAS_CORRECTION["int8"]  # subtract the rounded weights' mean output shift
    rounding: str = "gptq"  # the weights': nearest | gptq (edgecompile.quant.rounding)
    a16: tuple[str, ...] = ()  # linear layers (names or fnmatch patterns) reading int16 activations
    a16_auto: bool = False  # a16=auto: those calibration finds int8 too coarse for (edgecompile.quant.act_choice)

    @property
    def integer_only(self) -> bool:
        return bool(self.nonlinear)

    def __post_init__(self) -> None:
        if self.observer not in OBSERVERS:
            raise RecipeError(f"int8: unknown observer '{self.observer}' (choose {', '.join(OBSERVERS)})")
        if not 50.0 < self.percentile <= 100.0:
            raise RecipeError(f"int8: percentile must be in (50, 100], got {self.percentile}")
        if self.smooth is not None and not 0.0 <= self.smooth <= 1.0:
            raise RecipeError(f"int8: smooth must be auto or in [0, 1] (0: off), got {self.smooth}")
        if self.act not in ACT_MODES:
            raise RecipeError(f"int8: act must be one of {', '.join(ACT_MODES)}, got '{self.act}'")
        if self.max_drop is not None and not 0.0 <= self.max_drop < 1.0:
            raise RecipeError(f"int8: max_drop must be in [0, 1) or a percentage below 100%, got {self.max_drop:g}")
        if self.metric not in BUDGET_METRICS:
            raise RecipeError(f"int8: metric must be one of {', '.join(BUDGET_METRICS)}, got '{self.metric}'")
        if self.rounding not in ROUNDINGS:
            hint = " (AdaRound is not built: see edgecompile.quant.rounding)" if self.rounding == "adaround" else ""
            raise RecipeError(f"int8: rounding must be one of {', '.join(ROUNDINGS)}, got '{self.rounding}'{hint}")
        if self.samples is not None and self.samples < 1:
            raise RecipeError("int8: samples must be at least 1")
        chosen = dict(self.nonlinear)
        for kind, allowed in IMPLEMENTATIONS.items():
            if kind in chosen and chosen[kind] not in allowed:
                raise RecipeError(
                    f"int8-integer-only: {kind} must be one of {', '.join(allowed)}, got '{chosen[kind]}'"
                )

    @classmethod
    def from_options(cls, options: dict[str, str], integer_only: bool) -> QuantOptions:
        """The options of an ``int8`` (or, ``integer_only``, ``int8-integer-only``) recipe part; the
        int8 options are checked first, then the integer-only ones."""
        observer = options.get("observer", cls.observer)
        cls(observer)  # an unknown observer is reported before a malformed number
        part = "int8-integer-only" if integer_only else "int8"
        percentile = option_value(part, options, "percentile", float, cls.percentile)
        samples = option_value(part, options, "samples", int, None)
        keep_worst = option_value(part, options, "keep_worst", int, 0)
        smooth = None if options.get("smooth", "auto") == "auto" else option_value(part, options, "smooth", float, 0)
        keep, dynamic = (_patterns(options.get(k, "")) for k in ("keep_float", "dynamic"))
        act = options.get("act", cls.act)
        max_drop = _fraction(part, options["max_drop"]) if "max_drop" in options else None
        metric = options.get("metric", cls.metric)
        default = BIAS_CORRECTION["integer-only" if integer_only else "int8"]
        correct = options.get("bias_correction", "on" if default else "off")
        if correct not in ("on", "off"):
            raise RecipeError(f"{part}: bias_correction must be on or off, got '{correct}'")
        rounding = options.get("rounding", cls.rounding)
        a16 = options.get("a16", "off")
        wide = () if a16 in ("off", "auto") else _patterns(a16)
        parsed = cls(observer, percentile, samples, keep, (), smooth, keep_worst, act, dynamic, max_drop, metric,
                     correct == "on", rounding, wide, a16 == "auto")  # fmt: skip
        if not integer_only:
            return parsed
        return replace(parsed, nonlinear=tuple(sorted(nonlinear_choice(options).items())))


def _fraction(part: str, text: str) -> float:
    """``1%`` -> 0.01; a plain number as it is."""
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise RecipeError(f"{part}: max_drop takes a number or a percentage (1%), got '{text}'") from None


def _patterns(text: str) -> tuple[str, ...]:
    """Layer names or patterns separated by ';' (or spaces)."""
    return tuple(p for p in text.replace(";", " ").split() if p)


def nonlinear_choice(options: dict[str, str]) -> dict[str, str]:
    """op -> implementation from an ``int8-integer-only`` recipe part's options: the flavor's
    (``ops=``, default :data:`DEFAULT_FLAVOR`) with the per-op overrides (``softmax=``, ...) applied."""
    flavor = options.get("ops", DEFAULT_FLAVOR)
    if flavor not in FLAVORS:
        raise RecipeError(f"int8-integer-only: ops must be one of {', '.join(FLAVORS)}, got '{flavor}'")
    return {**FLAVORS[flavor], **{kind: options[kind] for kind in IMPLEMENTATIONS if kind in options}}
