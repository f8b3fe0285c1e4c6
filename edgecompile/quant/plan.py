"""Post-training int8 quantization of a model: calibrate, rewrite, measure each layer's error.

1. Calibrate: the float model runs on the calibration samples (built for this machine) and every
   tensor the rewrite needs a scale for streams into an observer (:mod:`edgecompile.calibrate`).
2. Rewrite: :mod:`edgecompile.quant.rewrite` turns the linear layers, activation matmuls and
   adds between int8 tensors (integer-only: the nonlinears too) into integer ops with dyadic
   requantization.
3. Measure: on up to :data:`ERROR_SAMPLES` calibration samples, each quantized layer's output
   (dequantized) is compared with the float model's: SQNR in dB. It is the error of the whole
   quantized model up to that layer, so the first layer with a low SQNR is where accuracy goes.
   ``keep_worst=k`` keeps the k layers with the lowest SQNR in float and rewrites again.
4. Budget (``max_drop=``): the last quarter of the samples is held out of steps 1-3, and the
   fewest layers go to run-time scales, then float, until the output's drop on it is within the
   budget (:mod:`edgecompile.quant.budget`).

Zero ranges: a tensor that is zero on every calibration sample gets a threshold of 1e-8, so at run
time any nonzero value there is clipped to about 0. That is right for a tensor that is always zero
and silently wrong otherwise (all-zero calibration data gave outputs of ~1e-8 where the float model
gives ~40). Decision: when some layers (not kept in float) saw only zeros, calibration goes on with
an :class:`~edgecompile.errors.EdgeCompileWarning` naming how many and the first few, because a layer
can legitimately be dead (a ReLU that never fires) and refusing would block such models; when every
layer to quantize did, nothing was calibrated and the int8 model could only output ~0, so it is a
:class:`~edgecompile.errors.CalibrationError`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from edgecompile.calibrate.capture import Runner, observe, padded_runner
from edgecompile.calibrate.observers import Observer, rounding_noise
from edgecompile.errors import CalibrationError, EdgeCompileWarning, RecipeError
from edgecompile.ir.layers import find_layers, linear_inputs, nonnegative_vars, observed_vars
from edgecompile.ir.ops import const_array, op_name
from edgecompile.ir.walk import bindings, building_with, carry_functions, matched_vars
from edgecompile.passes.patchify import linear_form
from edgecompile.quant.act_choice import (
    choose_dynamic,
    choose_wide,
    dynamic_gain_db,
    dynamic_kinds,
    dynamic_operands,
    held_sqnr,
    input_sqnr_db,
)
from edgecompile.quant.budget import held_out, meet_budget
from edgecompile.quant.layer_switch import switched_module
from edgecompile.quant.options import QuantOptions
from edgecompile.quant.rewrite import quantize_function
from edgecompile.quant.rounding import InputMoments
from edgecompile.quant.smooth import smoothing_factors

# Calibration samples the per-layer errors are measured on, and the smoothed inputs' row peaks
# (act=auto) observed on: means over every row of a few samples. Each sample is a float run and, for
# the errors, a quantized one: on the DINOv2 ViT-S of the zoo (24 calibration crops) 16 and a full
# second pass took 67 s of compile in one process, 8 and 8 take 57 s (61 s from the shell; Zen 4).
ERROR_SAMPLES = 8
ROW_SAMPLES = 8


@dataclass(repr=False)
class Calibration:
    """What calibration found, enough to rewrite the model again with other choices."""

    func: relax.Function  # the float main the layers belong to
    src: tvm.IRModule  # its module (the importer's TIR kernels)
    layers: list
    thresholds: dict
    # integer-only: op kind -> implementation, and a layer name -> its own (the budget's swaps)
    nonlinear: dict
    smooth: dict
    maxima: dict
    keep_float: tuple[str, ...] = ()
    record: dict = field(default_factory=dict)  # of the recipe's rewrite: forms, requantized
    integer_only: bool = False
    dynamic: frozenset = frozenset()  # layers with run-time activation scales (edgecompile.quant.act_choice)
    # linear input -> its InputMoments (edgecompile.quant.rounding: bias correction, GPTQ)
    moments: dict = field(default_factory=dict)
    wide: frozenset = frozenset()  # linear layers reading int16 activations (int8:a16=)

    def retarget(self, mod: tvm.IRModule) -> Calibration:
        """This calibration for ``mod``: the same model imported at other static input shapes (a
        bucket of a ranged artifact, :mod:`edgecompile.ranged`). Its layers take this one's
        thresholds, smoothing and ranges binding by binding, so both rewrites quantize alike."""
        mod = linear_form(mod)
        func = mod["main"]
        vmap = matched_vars(self.func, func)
        layers = find_layers(func, self.integer_only) if vmap is not None else []
        if vmap is None or [la.name for la in layers] != [la.name for la in self.layers]:
            raise RecipeError(
                "int8: the model's graph differs between the bucket sizes of its ranged inputs, so one "
                "calibration cannot serve them all; compile a fixed shape"
            )
        moved = lambda d: {vmap[v]: x for v, x in d.items()}  # noqa: E731
        return Calibration(
            func, mod, layers, moved(self.thresholds), self.nonlinear, moved(self.smooth), moved(self.maxima),
            self.keep_float, integer_only=self.integer_only, dynamic=self.dynamic, moments=moved(self.moments),
            wide=self.wide,
        )  # fmt: skip

    def rewrite(self, keep_float=None) -> tvm.IRModule:
        """The quantized module, with ``keep_float`` (default: the recipe's) left in float."""
        keep = self.keep_float if keep_float is None else keep_float
        record: dict = {}
        mod = quantize_function(
            self.func, self.layers, self.thresholds, keep, nonlinear=self.nonlinear, smooth=self.smooth,
            maxima=self.maxima, record=record, dynamic=self.dynamic, moments=self.moments, wide=self.wide,
        )  # fmt: skip
        if keep_float is None:
            self.record = record
        return carry_functions(mod, self.src)

    def switched(self) -> tuple[tvm.IRModule, list[dict]]:
        """The module of :mod:`edgecompile.quant.layer_switch` (per-layer sensitivity) and its
        layers, ``{"name", "kind"}`` per switch value."""
        if not self.record:
            self.rewrite()
        mod, alone = switched_module(
            self.func, self.layers, self.thresholds, self.record, self.nonlinear, self.smooth, self.maxima,
            self.dynamic, self.moments, self.wide,
        )  # fmt: skip
        return carry_functions(mod, self.src), [{"name": layer.name, "kind": layer.kind} for layer in alone]


@dataclass
class QuantResult:
    mod: tvm.IRModule
    layers: list[dict]  # per quantized layer: name, kind, scales, sqnr_db
    kept_float: list[str]
    samples: int
    calibration: Calibration | None = field(default=None, repr=False)
    budget: dict | None = None  # int8:max_drop= (edgecompile.quant.budget)

    def to_json(self, options: QuantOptions) -> dict:
        """The manifest's ``quantization`` entry."""
        return {
            "observer": options.observer,
            "integer_ops": dict(options.nonlinear),
            "percentile": options.percentile if options.observer == "percentile" else None,
            "smooth": "auto" if options.smooth is None else options.smooth,
            "act": options.act,
            "bias_correction": options.bias_correction,
            "rounding": options.rounding,
            # the layers rewritten with run-time scales (a chosen one whose input has no single
            # scale, e.g. read per channel, keeps the static path)
            "dynamic": sorted(r["name"] for r in self.layers if r.get("act") == "dynamic"),
            "a16": sorted(r["name"] for r in self.layers if r.get("act") == "a16"),
            "samples": self.samples,
            "kept_float": self.kept_float,
            "max_drop": options.max_drop,
            "budget_metric": options.metric if options.max_drop is not None else None,
            "budget": self.budget,
            "layers": self.layers,
        }


def _sqnr(signal: float, noise: float) -> float:
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(max(signal, 1e-30) / noise))


def quantize_model(
    mod: tvm.IRModule,
    samples: list[dict],
    input_names: list[str],
    options: QuantOptions,
    build: Callable[[tvm.IRModule], object],
    progress: Callable[[str, int, int], None] | None = None,
    padding=None,
) -> QuantResult:
    """The int8 module of ``mod`` calibrated on ``samples``; ``build`` compiles a module for this
    machine (for calibration runs); ``progress(stage, done, total)`` reports each sample;
    ``padding`` (a ranged compile's :class:`edgecompile.calibrate.padding.Padding`): what of the
    samples is padding, left out of every statistic."""
    say = progress or (lambda *_: None)
    # Exporters write Linear weights as permute_dims(W): fold them to constants. Patch-embedding
    # convolutions become GEMMs first, so they are quantized as linear layers.
    mod = linear_form(mod)
    func = mod["main"]
    build = building_with(build, mod)
    layers = find_layers(func, options.integer_only)
    if not layers:
        raise RecipeError("int8: the model has no matmul, linear or add to quantize")
    _check_patterns("keep_float", options.keep_float, layers)
    _check_patterns("dynamic", options.dynamic, layers)
    _check_patterns("a16", options.a16, layers)
    held: list[dict] = []
    if options.max_drop is not None:
        samples, held = held_out(samples)
    wanted = observed_vars(layers)
    # built once: calibration and errors
    frun = padded_runner(func, wanted, input_names, build, padding, linear_form)
    stats = _calibrate(func, layers, frun, wanted, samples, options, say)
    _check_zero_ranges(layers, stats.maxima, options.keep_float)
    dynamic = choose_dynamic(
        [la for la in layers if not la.matches(options.keep_float)], options.act, options.dynamic, stats.gains,
        options.integer_only,
    )  # fmt: skip
    wide = choose_wide([la for la in layers if not la.matches(options.keep_float)], options, stats.int8_sqnr, dynamic)
    keep = list(options.keep_float)
    nonlinear = dict(options.nonlinear)
    measure = functools.partial(_layer_errors, func, layers, stats, frun, wanted, samples[:ERROR_SAMPLES], say)
    errors = measure(nonlinear, dynamic, keep, wide)
    if options.keep_worst:
        worst = sorted((e for e in errors if e["quantized"]), key=lambda e: e["sqnr_db"])[: options.keep_worst]
        keep += [e["name"] for e in worst]
        errors = measure(nonlinear, dynamic, keep, wide)
    calibration = Calibration(
        func, mod, layers, stats.thresholds, nonlinear, stats.smooth, stats.maxima, tuple(keep),
        integer_only=options.integer_only, dynamic=frozenset(dynamic), moments=stats.moments, wide=frozenset(wide),
    )  # fmt: skip
    budget = None
    if options.max_drop is not None:
        calibration, budget = meet_budget(
            calibration, frun.first_output, held, options.max_drop, options.metric, build, input_names,
            dynamic_kinds(options.integer_only), say, frun.trim_first,
        )  # fmt: skip
        if budget["plan"]:
            errors = measure(calibration.nonlinear, calibration.dynamic, list(calibration.keep_float),
                             calibration.wide)  # fmt: skip
    return QuantResult(calibration.rewrite(), errors, list(calibration.keep_float), len(samples), calibration, budget)


@dataclass
class _Stats:
    """What the calibration runs measured: clipping values, smoothing, largest |x|, and per layer
    the dB run-time scales would save (:func:`edgecompile.quant.act_choice.dynamic_gain_db`)."""

    thresholds: dict
    smooth: dict
    maxima: dict
    gains: dict
    moments: dict  # linear input -> InputMoments, with bias_correction=on or rounding=gptq
    # linear layer -> estimated SQNR of its input in int8, (static, run-time row scales), with a16=auto
    int8_sqnr: dict


def _calibrate(func, layers, frun: Runner, wanted, samples, options: QuantOptions, say) -> _Stats:
    """Observe ``wanted`` on ``samples`` (twice where SmoothQuant moves ranges into the weights)."""
    make_observer = lambda: Observer(options.observer, options.percentile)  # noqa: E731
    readers = linear_inputs(layers) if options.smooth != 0 else {}
    weighed = options.bias_correction or options.rounding == "gptq"
    channels = dict.fromkeys(linear_inputs(layers) if weighed or options.a16_auto else readers)
    nonneg = nonnegative_vars(func)
    kinds = dynamic_kinds(options.integer_only) if options.act != "static" else ()
    operands = {la.name: ops for la in layers if la.kind in kinds and (ops := dynamic_operands(la, nonneg))}
    rows = dict.fromkeys(key for keys in operands.values() for key in keys)
    grams = frozenset(linear_inputs(layers)) if options.rounding == "gptq" else frozenset()
    observers = observe(frun, wanted, samples, make_observer, lambda i, n: say("calibrating", i, n), channels,
                        rows=rows, grams=grams)  # fmt: skip
    sigmas = {v: s for v in readers if (s := smoothing_factors(channels[v], readers[v], options.smooth)) is not None}
    # smoothing evened the channel ranges, so clipping would cut the largest values of every channel:
    # the range of x / sigma is its max, max_c(max|x_c| / sigma_c), from this pass's channel maxima
    smooth = {v: (sigma, float(np.max(channels[v].max / sigma))) for v, sigma in sigmas.items()}
    smoothed_rows = {key: None for key in rows if key[0] in sigmas}
    if smoothed_rows:  # act=auto weighs run-time row scales of x / sigma: a second, shorter pass
        observe(frun, wanted, samples[:ROW_SAMPLES], make_observer, lambda i, n: say("calibrating smoothed", i, n),
                divide={v: sigmas[v] for v, _ in smoothed_rows}, rows=smoothed_rows)  # fmt: skip
    # Softmax outputs are probabilities in [0, 1] whose largest values matter most (peaked
    # attention): their range is the observed max, whatever the observer clips elsewhere.
    softmax = {b.var for b in bindings(func) if op_name(b.value) == "relax.nn.softmax"}
    thresholds = {v: (o.max if v in softmax else o.threshold()) for v, o in observers.items()}
    gains = {}
    kinds = {la.name: la.kind for la in layers}
    for name, keys in operands.items():
        per = [
            dynamic_gain_db(rounding_noise(smooth[v][1]), smoothed_rows[v, a].mean_square)
            if kinds[name] == "linear" and v in smooth
            else dynamic_gain_db(observers[v].expected_error(thresholds[v]), rows[v, a].mean_square)
            for v, a in keys
        ]
        gains[name] = max(per, default=0.0)
    moments = {
        v: InputMoments(
            channels[v].mean if options.bias_correction else None, channels[v].second_moment, channels[v].gram_rows
        )
        for v in linear_inputs(layers)
    } if weighed else {}  # fmt: skip
    int8_sqnr = {}
    for la in layers if options.a16_auto else ():
        v = la.inputs[0] if la.kind == "linear" else None
        if v in channels and channels[v] is not None:
            reach = np.sum(np.square(const_array(la.binding.value.args[1]), dtype=np.float64), axis=1)
            static = (rounding_noise(smooth[v][1]) * smooth[v][0] ** 2 if v in smooth
                      else observers[v].expected_error(thresholds[v]))  # fmt: skip
            row = rows.get((v, -1))
            dyn = None if row is None else rounding_noise(1.0) * row.mean_square
            int8_sqnr[la.name] = input_sqnr_db(channels[v].mean_square, static, dyn, reach)
    return _Stats(thresholds, smooth, {v: o.max for v, o in observers.items()}, gains, moments, int8_sqnr)


def _check_patterns(option: str, patterns: tuple[str, ...], layers) -> None:
    """Every ``keep_float`` (or ``dynamic``) name or pattern names at least one layer (a typo would
    keep nothing)."""
    names = [layer.name for layer in layers]
    unmatched = [p for p in patterns if not any(layer.matches([p]) for layer in layers)]
    if unmatched:
        shown = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
        raise RecipeError(
            f"{option} {unmatched[0]!r} names no layer of this model; its layers are {shown} "
            "(`edgecompile inspect ARTIFACT --quant` lists them)"
        )


def _check_zero_ranges(layers, maxima: dict, keep_float: tuple[str, ...]) -> None:
    """Warn about layers whose inputs or output were zero on every calibration sample; refuse when
    every layer's were (see the module docstring)."""
    counted = [layer for layer in layers if not layer.matches(keep_float)]
    zero = [layer.name for layer in counted if any(maxima.get(v) == 0.0 for v in (*layer.inputs, layer.output))]
    if not zero:
        return
    shown = ", ".join(zero[:5]) + (f" and {len(zero) - 5} more" if len(zero) > 5 else "")
    if len(zero) == len(counted):
        raise CalibrationError(
            f"every layer to quantize ({shown}) saw only zeros in calibration, so no int8 range could be "
            "measured and the model would output about 0; calibrate with data like the real inputs (all-zero "
            "or constant calibration data does not work)"
        )
    warnings.warn(
        f"{len(zero)} of {len(counted)} layers to quantize saw only zeros in calibration ({shown}): their int8 "
        "range falls back to 1e-8, so any nonzero value they get at run time is clipped to about 0. That is "
        "right only if they are always zero; otherwise calibrate with data like the real inputs or keep them in "
        f"float (--keep-float {zero[0]}). Quantizing them as calibrated",
        EdgeCompileWarning,
        stacklevel=3,
    )


def _layer_errors(
    func, layers, stats: _Stats, frun: Runner, wanted, samples, say, nonlinear, dynamic, keep, wide
) -> list[dict]:
    """SQNR of each layer's output: the float values from ``frun`` (which returns ``wanted``, the
    layer outputs among them) against the quantized model's, dequantized."""
    outputs = [layer.output for layer in layers]
    qmod = quantize_function(
        func, layers, stats.thresholds, keep, extra_outputs=outputs, nonlinear=nonlinear, smooth=stats.smooth,
        maxima=stats.maxima, dynamic=dynamic, moments=stats.moments, wide=wide,
    )  # fmt: skip
    qrun = frun.like(qmod, outputs)
    pos = {v: i for i, v in enumerate(wanted)}
    signal, noise = np.zeros(len(layers)), np.zeros(len(layers))
    for i, sample in enumerate(samples):
        floats = frun(sample)
        for j, q in enumerate(qrun(sample)):
            f64 = floats[pos[layers[j].output]].astype(np.float64)
            signal[j] += float(np.sum(f64**2))
            noise[j] += float(np.sum((f64 - q) ** 2))
        say("measuring layer error", i + 1, len(samples))
    rows = []
    for j, layer in enumerate(layers):
        rows.append(
            {
                "name": layer.name,
                "kind": layer.kind,
                "quantized": bool(layer.info),  # only rewritten layers carry scales
                "sqnr_db": round(_sqnr(signal[j], noise[j]), 2),
                **({"dynamic_gain_db": round(stats.gains[layer.name], 1)} if layer.name in stats.gains else {}),
                **({"int8_input_sqnr_db": round(held_sqnr(stats.int8_sqnr[layer.name], layer.name in dynamic), 1)}
                   if layer.name in stats.int8_sqnr else {}),  # fmt: skip
                **{k: _jsonable(v) for k, v in layer.info.items()},
            }
        )
    return rows


def _jsonable(v):
    if isinstance(v, (str, bool)):
        return v
    return float(v) if np.isscalar(v) else [float(x) for x in v]
