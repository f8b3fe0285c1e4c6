"""Calibration samples from the user: an ``.npz``, a directory of them, or an iterable of dicts.

An ``.npz`` holds one array per model input, stacked along a new leading sample axis
(``input_ids: [N, 1, 128]``); a directory's ``.npz`` files are read in name order and
concatenated. From Python any iterable of ``{name: array}`` (one sample each) works too. Every
sample is checked against the model's input specs: a missing or unknown name, a wrong shape, or a
dtype that cannot be cast without loss is a :class:`~edgecompile.errors.CalibrationError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from edgecompile.errors import CalibrationError
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
        out[s.name] = np.ascontiguousarray(a.astype(s.dtype, copy=False))
    return out


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
    return samples
