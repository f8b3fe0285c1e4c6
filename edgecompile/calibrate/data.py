"""Calibration samples from the user: an ``.npz``, a directory of them, or an iterable of dicts.

An ``.npz`` holds one array per model input, stacked along a new leading sample axis
(``input_ids: [N, 1, 128]``); a directory's ``.npz`` files are read in name order and
concatenated. From Python any iterable of ``{name: array}`` (one sample each) works too. Every
sample is checked against the model's input specs: a missing or unknown name, a wrong shape, a
dtype that cannot be cast without loss, an index outside its input's ``valid_range`` (a token id
past the embedding table) or a NaN/inf in a float input is a
:class:`~edgecompile.errors.CalibrationError` naming the input and the sample.

Degenerate data is a warning (:class:`~edgecompile.errors.EdgeCompileWarning`), not an error: a
float input that is constant over every sample (all zeros, say) or samples that are all identical
still calibrate, but the ranges observed from them describe one point, not the inputs the model
will see. The data is used as given; the warning says so. (A model may legitimately take a constant
input, e.g. a fixed mask, so refusing would be wrong; the quantizer warns again, or refuses, when
the ranges it observed are zero: :mod:`edgecompile.quant.plan`.)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from edgecompile.errors import CalibrationError, EdgeCompileWarning
from edgecompile.frontend.spec import TensorSpec


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file by name; a file that cannot be read is a :class:`CalibrationError`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as e:  # zipfile / pickle / value errors: all mean a bad file
        raise CalibrationError(f"cannot read calibration file {path}: {e}") from e


def _stacked_samples(arrays: dict[str, np.ndarray], where: str) -> Iterator[dict[str, np.ndarray]]:
    counts = {k: (v.shape[0] if v.ndim else None) for k, v in arrays.items()}
    if None in counts.values() or len(set(counts.values())) > 1:
        raise CalibrationError(
            f"{where}: every array needs the same leading sample axis; got "
            + ", ".join(f"{k}{list(v.shape)}" for k, v in arrays.items())
        )
    n = next(iter(counts.values()), 0)
    for i in range(n):
        yield {k: v[i] for k, v in arrays.items()}


def iter_samples(source) -> Iterator[dict[str, np.ndarray]]:
    """The samples of ``source`` (path to ``.npz`` / directory, or iterable of dicts), unchecked."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = sorted(path.glob("*.npz"))
            if not files:
                raise CalibrationError(f"calibration directory {path} has no .npz files")
            for f in files:
                yield from _stacked_samples(read_npz(f), str(f))
        elif path.is_file():
            yield from _stacked_samples(read_npz(path), str(path))
        else:
            raise CalibrationError(f"calibration data not found: {path}")
        return
    if isinstance(source, dict):
        yield from _stacked_samples({k: np.asarray(v) for k, v in source.items()}, "calibration arrays")
        return
    if not isinstance(source, Iterable):
        raise CalibrationError(f"calibration data must be a path or an iterable of dicts, not {type(source).__name__}")
    for i, sample in enumerate(source):
        if not isinstance(sample, dict):
            raise CalibrationError(f"calibration sample {i} is a {type(sample).__name__}, not a {{name: array}} dict")
        yield sample


def _check(sample: dict, specs: list[TensorSpec], index: int) -> dict[str, np.ndarray]:
    names = {s.name for s in specs}
    missing = [s.describe() for s in specs if s.name not in sample]
    if missing:
        raise CalibrationError(f"calibration sample {index} lacks input(s) {', '.join(missing)}")
    unknown = sorted(set(sample) - names)
    if unknown:
        raise CalibrationError(
            f"calibration sample {index} has unknown input(s) {', '.join(unknown)}; "
            f"the model's are {', '.join(sorted(names))}"
        )
    out = {}
    for s in specs:
        a = np.asarray(sample[s.name])
        if tuple(a.shape) != tuple(s.shape):
            raise CalibrationError(
                f"calibration input '{s.name}' of sample {index} has shape {list(a.shape)}; the model "
                f"expects {list(s.shape)} (stack samples along a new leading axis)"
            )
        if not np.can_cast(a.dtype, s.dtype, casting="same_kind"):
            raise CalibrationError(f"calibration input '{s.name}' is {a.dtype}; the model expects {s.dtype}")
        _check_range(a, s, index)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow to inf is reported next
            out[s.name] = np.ascontiguousarray(a.astype(s.dtype, copy=False))
        _check_finite(out[s.name], s, index)
    return PaddedSample(out, sample.sizes) if isinstance(sample, PaddedSample) else out


def _check_range(a: np.ndarray, s: TensorSpec, index: int) -> None:
    """Integer values of an input that indexes a table must lie in its ``valid_range`` (checked
    before any cast, so an int64 id of 10**12 is not wrapped into range)."""
    if s.valid_range is None or a.dtype.kind not in "iu" or a.size == 0:
        return
    lo, hi = s.valid_range
    bad = np.flatnonzero((a < lo) | (a > hi))
    if bad.size:
        pos = np.unravel_index(int(bad[0]), a.shape)
        raise CalibrationError(
            f"calibration input '{s.name}' of sample {index} holds {int(a[pos])} at index {list(map(int, pos))} "
            f"({bad.size} value{'s' if bad.size > 1 else ''} out of range), outside its valid range [{lo}, {hi}]: "
            f"it indexes a table of {hi + 1} rows (e.g. token ids of a vocabulary of {hi + 1}); check the "
            "tokenizer matches the model"
        )


def _check_finite(a: np.ndarray, s: TensorSpec, index: int) -> None:
    """A float input must hold no NaN or inf (after the cast: float64 values past float32's range
    become inf)."""
    if a.dtype.kind not in "fc" or a.size == 0:
        return
    finite = np.isfinite(a)
    if finite.all():
        return
    nans, infs = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    pos = np.unravel_index(int(np.flatnonzero(~finite)[0]), a.shape)
    what = " and ".join(p for p in (f"{nans} NaN" if nans else "", f"{infs} inf" if infs else "") if p)
    raise CalibrationError(
        f"calibration input '{s.name}' of sample {index} holds {what} of {a.size} values (the first "
        f"{a[pos]} at index {list(map(int, pos))}); calibration needs finite values (an inf can be a "
        f"value past {s.dtype}'s range)"
    )


def warn_degenerate(samples: list[dict[str, np.ndarray]], specs: list[TensorSpec]) -> None:
    """Warn (:class:`EdgeCompileWarning`) about float inputs constant over all samples, and about
    samples that are all the same; the data is used as given."""
    n = len(samples)
    constant = []
    for s in specs:
        if np.dtype(s.dtype).kind != "f":
            continue
        lo = min(float(x[s.name].min()) for x in samples if x[s.name].size)
        hi = max(float(x[s.name].max()) for x in samples if x[s.name].size)
        if lo == hi:
            constant.append(s.name)
            value = "all zeros" if lo == 0 else f"every value {lo:g}"
            warnings.warn(
                f"calibration input '{s.name}' is constant ({value}) in all {n} sample{'s' if n > 1 else ''}: "
                "the activation ranges observed from it describe this one value, not the inputs the model will "
                "see, so int8 scales may clip real values; calibrating with it as given (pass representative "
                "data, e.g. real inputs from your dataset)",
                EdgeCompileWarning,
                stacklevel=3,
            )
    if n > 1 and not constant and all(_same(samples[0], x) for x in samples[1:]):
        warnings.warn(
            f"the {n} calibration samples are identical: calibration sees one input, so the observed ranges "
            "may not cover what the model will see; calibrating with them as given (pass varied samples)",
            EdgeCompileWarning,
            stacklevel=3,
        )


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in a)


class PaddedSample(dict):
    """A calibration sample zero-padded to a ranged artifact's largest build; ``sizes``: each
    group's own size (:mod:`edgecompile.calibrate.padding`)."""

    def __init__(self, arrays: dict, sizes: dict[str, int]):
        super().__init__(arrays)
        self.sizes = sizes


def load_samples(source, specs: list[TensorSpec], count: int | None = None) -> list[dict[str, np.ndarray]]:
    """Up to ``count`` checked samples of ``source`` (all of them if None); fewer than ``count`` is
    an error. The samples are model inputs, small next to the activations observed from them."""
    if source is None:
        raise CalibrationError("this recipe quantizes activations and needs calibration data: pass --calib FILE.npz")
    samples = []
    for i, sample in enumerate(iter_samples(source)):
        if count is not None and i >= count:
            break
        samples.append(_check(sample, specs, i))
    if not samples:
        raise CalibrationError("the calibration data holds no samples")
    if count is not None and len(samples) < count:
        raise CalibrationError(f"the recipe asks for {count} calibration samples; the data holds {len(samples)}")
    warn_degenerate(samples, specs)
    return samples
