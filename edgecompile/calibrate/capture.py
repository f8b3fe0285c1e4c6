"""Running a model on calibration samples and streaming chosen intermediate tensors to observers.

The float function is re-emitted with the wanted tensors appended to its outputs, built for this
machine by the caller's ``build`` (our CPU pipeline), and run sample by sample; each captured
tensor goes to its observer and is dropped, so memory holds one sample's activations at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from edgecompile.calibrate.observers import Observer
from edgecompile.calibrate.padding import cut
from edgecompile.errors import CalibrationError
from edgecompile.ir.host import HostFunction
from edgecompile.ir.walk import rebuild
from edgecompile.runtime.model import flatten_outputs

Progress = Callable[[int, int], None]


def with_outputs(func: relax.Function, wanted: list[relax.Var]) -> tvm.IRModule:
    """``func`` returning ``(original outputs, *wanted)``."""
    return rebuild(func, outputs=wanted)


class Runner:
    """A module built for this machine (:class:`edgecompile.ir.host.HostFunction`), called with
    ``{name: array}`` samples; returns the tensors appended to the model's own outputs. With a
    ranged compile's ``padding`` (:class:`edgecompile.calibrate.padding.Padding`), ``axes`` (the
    padded axes of the function's tensors) and ``appended`` (the vars those tensors are), each
    tensor and the first output come back cut to the sample's own sizes
    (:func:`edgecompile.calibrate.padding.cut`)."""

    def __init__(
        self, mod: tvm.IRModule, input_names: list[str], build: Callable, padding=None, axes: dict | None = None,
        appended: list | None = None,
    ):  # fmt: skip
        self.host = HostFunction(mod, build, input_names)
        self.names = input_names
        self.build = build
        self.padding, self.axes = padding, axes or {}
        self._cuts = [self.axes.get(v) for v in appended] if padding is not None and appended else None

    def like(self, mod: tvm.IRModule, appended: list | None = None) -> Runner:
        """Another module of the same model (same inputs, build and padding) appending ``appended``."""
        return Runner(mod, self.names, self.build, self.padding, self.axes, appended)

    def __call__(self, sample: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = [t.numpy() for t in list(self.host.raw(sample))[1:]]  # the appended tensors
        return [cut(t, c, sample) for t, c in zip(out, self._cuts)] if self._cuts else out

    def first_output(self, sample: dict[str, np.ndarray]) -> np.ndarray:
        """The model's own (first) output, which the appended tensors follow."""
        return self.trim_first(flatten_outputs(list(self.host.raw(sample))[0])[0], sample)

    def trim_first(self, value: np.ndarray, sample: dict[str, np.ndarray]) -> np.ndarray:
        """A first output of this model (or of its rewrites) on ``sample``, without the padding."""
        return cut(value, self.padding.first, sample) if self.padding is not None else value


def padded_runner(
    func: relax.Function, wanted: list[relax.Var], names: list[str], build: Callable, padding, prepare=None
) -> Runner:
    """``Runner(with_outputs(func, wanted), ...)``; with ``padding`` (a
    :class:`edgecompile.calibrate.padding.Padding` or None) the tensors come back without the
    padding, their axes found on ``func`` (the largest build's graph after ``prepare``)."""
    axes = padding.axes(func, prepare) if padding is not None else None
    return Runner(with_outputs(func, wanted), names, build, padding, axes, wanted)


# The Gram matrices (GPTQ's E[x x^T], summed in float32) take the rows of the first samples until
# at least this many: five per input channel of a BERT-base FFN (3072). Summing all of a 128-email
# MiniLM calibration (16K rows) costs its compile about 5 s; stopping at 8K rows instead lowered
# the spam demo's worst int8 embedding cosine from 0.99716 to 0.99463 (Zen 4).
GRAM_ROWS = 16384


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel (last axis) statistics of one tensor over the calibration set."""

    max: np.ndarray  # max |x|
    sumsq: np.ndarray  # sum of x^2
    count: int  # rows summed
    sum: np.ndarray | None = None  # sum of x
    gram: np.ndarray | None = None  # sum of x x^T over the first rows, where asked for (observe's ``grams``)
    gram_rows: int = 0  # rows the Gram matrix sums: those of the first samples, GRAM_ROWS or more

    @property
    def mean_square(self) -> np.ndarray:
        return self.sumsq / max(self.count, 1)

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.count, 1)

    @property
    def second_moment(self) -> np.ndarray | None:
        """``E[x x^T]`` over the rows the Gram matrix summed (None where it was not)."""
        return None if self.gram is None else np.asarray(self.gram, np.float64) / max(self.gram_rows, 1)


@dataclass(frozen=True)
class RowStats:
    """The largest ``|x|`` of each slice of one tensor along an axis (a token's row, a key's column),
    summed over the calibration set: what a run-time scale per slice would be."""

    sumsq: float  # sum over slices of (max |x| of the slice)^2
    count: int  # slices seen

    @property
    def mean_square(self) -> float:
        return self.sumsq / max(self.count, 1)


def _row_stats(stats: RowStats | None, value: np.ndarray, axis: int) -> RowStats:
    peaks = np.abs(np.asarray(value, np.float64)).max(axis=axis)
    stats = stats or RowStats(0.0, 0)
    return RowStats(stats.sumsq + float(np.sum(peaks**2)), stats.count + peaks.size)


def observe(
    run: Runner,
    wanted: list[relax.Var],
    samples: list[dict],
    make_observer: Callable[[], Observer],
    progress: Progress | None = None,
    channels: dict[relax.Var, np.ndarray | None] | None = None,
    divide: dict[relax.Var, np.ndarray] | None = None,
    rows: dict[tuple[relax.Var, int], RowStats | None] | None = None,
    grams: frozenset = frozenset(),
) -> dict[relax.Var, Observer]:
    """One observer per wanted tensor, fed by every sample; ``run`` is the float function built
    by ``Runner(with_outputs(func, wanted), ...)``. ``channels`` (var -> None) is filled in place
    with each var's per-channel (last axis) :class:`ChannelStats`; with ``divide`` (var -> per-channel
    divisor) only those vars are observed, as ``x / divisor``. ``rows`` ((var, axis) -> None) is
    filled likewise with the :class:`RowStats` of each observed var along that axis. The vars of
    ``channels`` also in ``grams`` sum their Gram matrix ``x^T x`` over the rows too."""
    observed = list(divide) if divide is not None else wanted
    observers = {v: make_observer() for v in observed}
    axes: dict = {}
    for v, axis in rows or ():
        axes.setdefault(v, []).append(axis)
    for i, sample in enumerate(samples):
        for v, value in zip(wanted, run(sample)):
            if channels is not None and v in channels:
                flat = np.asarray(value, np.float64).reshape(-1, value.shape[-1])
                zeros = np.zeros(flat.shape[1])
                stats = channels[v] or ChannelStats(zeros, zeros, 0, zeros)
                gram, gram_rows = stats.gram, stats.gram_rows
                if v in grams and gram_rows < GRAM_ROWS:  # float32: twice float64's speed
                    rows32 = np.asarray(value, np.float32).reshape(flat.shape)
                    gram = rows32.T @ rows32 + (gram if gram is not None else 0.0)
                    gram_rows += flat.shape[0]
                channels[v] = ChannelStats(
                    np.maximum(stats.max, np.abs(flat).max(axis=0)), stats.sumsq + (flat**2).sum(axis=0),
                    stats.count + flat.shape[0], stats.sum + flat.sum(axis=0), gram, gram_rows,
                )  # fmt: skip
            if v in observers:
                seen = value / divide[v] if divide is not None else value
                for axis in axes.get(v, ()):
                    rows[v, axis] = _row_stats(rows[v, axis], seen, axis)
                try:
                    observers[v].observe(seen)
                except ValueError as e:  # the observer refuses inf / NaN
                    raise CalibrationError(
                        f"calibration sample {i}: the float model's tensor '{v.name_hint}' holds inf or NaN "
                        "although the inputs are finite (the model overflows on this sample); check the "
                        "calibration data's scale"
                    ) from e
        if progress:
            progress(i + 1, len(samples))
    return observers
