"""Calibration data checks: token ids outside their table, NaN/inf, and degenerate data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from edgecompile.calibrate.data import load_samples
from edgecompile.errors import CalibrationError, EdgeCompileWarning
from edgecompile.frontend.spec import TensorSpec

IDS = TensorSpec("input_ids", (1, 4), "int64", (-1000, 999))
X = TensorSpec("x", (1, 4), "float32")


def _samples(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [{"input_ids": rng.integers(0, 1000, (1, 4)), "x": rng.standard_normal((1, 4))} for _ in range(n)]


def _load(samples):
    with warnings.catch_warnings():
        warnings.simplefilter("error", EdgeCompileWarning)  # clean data warns about nothing
        return load_samples(samples, [IDS, X])


def test_clean_data_loads_without_warnings():
    out = _load(_samples())
    assert len(out) == 3 and out[0]["x"].dtype == np.float32


@pytest.mark.parametrize("bad", [1000, 10**12, -1001, 1000 + 5000])
def test_id_outside_the_valid_range_names_input_sample_value_and_range(bad):
    samples = _samples()
    samples[2]["input_ids"][0, 1] = bad
    with pytest.raises(CalibrationError) as info:
        load_samples(samples, [IDS, X])
    msg = str(info.value)
    assert "'input_ids'" in msg and "sample 2" in msg and str(bad) in msg and "[-1000, 999]" in msg
    assert "at index [0, 1]" in msg


def test_int32_ids_are_checked_before_the_cast():
    spec = TensorSpec("input_ids", (1, 2), "int32", (-10, 9))
    with pytest.raises(CalibrationError, match="holds 4294967296"):
        load_samples([{"input_ids": np.array([[1, 2**32]], np.int64)}], [spec])


def test_negative_ids_inside_the_range_are_fine():
    samples = _samples()
    samples[0]["input_ids"][:] = -1000
    _load(samples)


@pytest.mark.parametrize("bad,what", [(np.nan, "1 NaN"), (np.inf, "1 inf"), (-np.inf, "1 inf"), (1e300, "1 inf")])
def test_nan_and_inf_name_input_and_sample(bad, what):
    samples = _samples()
    samples[1]["x"] = samples[1]["x"].astype(np.float64)
    samples[1]["x"][0, 3] = bad
    with pytest.raises(CalibrationError) as info:
        load_samples(samples, [IDS, X])
    msg = str(info.value)
    assert "'x'" in msg and "sample 1" in msg and what in msg and "at index [0, 3]" in msg


def test_all_zero_float_input_warns():
    samples = _samples()
    for s in samples:
        s["x"] = np.zeros((1, 4))
    with pytest.warns(EdgeCompileWarning, match=r"'x' is constant \(all zeros\) in all 3 samples") as rec:
        out = load_samples(samples, [IDS, X])
    assert len(out) == 3  # used as given
    assert "calibrating with it as given" in str(rec[0].message)


def test_constant_float_input_warns():
    samples = _samples()
    for s in samples:
        s["x"] = np.full((1, 4), 0.5)
    with pytest.warns(EdgeCompileWarning, match=r"'x' is constant \(every value 0.5\)"):
        load_samples(samples, [IDS, X])


def test_identical_samples_warn():
    samples = _samples(1) * 4
    with pytest.warns(EdgeCompileWarning, match="4 calibration samples are identical"):
        load_samples(samples, [IDS, X])


def test_constant_integer_input_is_not_degenerate():
    samples = _samples()
    for s in samples:
        s["input_ids"] = np.zeros((1, 4), np.int64)
    _load(samples)
