"""Weight rounding (``int8:rounding=``): GPTQ against rounding to nearest, on its own and in a
calibrated int8 model."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from edgecompile.errors import RecipeError
from edgecompile.lower.build import compile_module
from edgecompile.quant.options import QuantOptions
from edgecompile.quant.plan import quantize_model
from edgecompile.quant.rounding import InputMoments, round_gptq, round_nearest
from edgecompile.targets import get_profile

HOST = get_profile("native").resolved()


def _correlated(rng, mix: np.ndarray, rows: int) -> np.ndarray:
    """Inputs whose channels are strongly correlated (a few sources mixed by ``mix``), as a
    transformer's hidden states are: where GPTQ's compensation has something to work with."""
    return rng.normal(size=(rows, mix.shape[0])) @ mix + 0.05 * rng.normal(size=(rows, mix.shape[1]))


def _output_error(x, w, q, s) -> float:
    return float(np.sum((x @ w - x @ (q * s)) ** 2))


def test_gptq_with_uncorrelated_inputs_is_rounding_to_nearest():
    """A diagonal second moment spreads no error: every weight is its nearest int8 step."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (64, 24)).astype(np.float32)
    q, s = round_gptq(w, np.diag(rng.uniform(0.5, 2.0, 64)))
    qn, sn = round_nearest(w)
    np.testing.assert_array_equal(q, qn)
    np.testing.assert_array_equal(s, sn)


def test_gptq_lowers_the_output_error_on_correlated_inputs():
    """On held-out inputs of the calibration's distribution, the layer's output error is well under
    rounding to nearest's; weights stay int8 in [-127, 127] at the same per-column scales."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.1, (96, 32))
    mix = rng.normal(size=(8, 96))
    calib, held = _correlated(rng, mix, 2048), _correlated(rng, mix, 512)
    q, s = round_gptq(w, calib.T @ calib / len(calib))
    qn, sn = round_nearest(w)
    np.testing.assert_array_equal(s, sn)
    assert q.dtype == np.int8 and np.abs(q.astype(int)).max() <= 127
    assert _output_error(held, w, q, s) < 0.2 * _output_error(held, w, qn, sn)


def test_gptq_keeps_the_weights_of_a_channel_that_was_always_zero():
    """An input channel zero throughout calibration carries no error information: its weights are
    rounded to nearest, not left to absorb the others' errors."""
    rng = np.random.default_rng(4)
    x = _correlated(rng, rng.normal(size=(8, 48)), 1024)
    x[:, 5] = 0.0
    w = rng.normal(0, 0.1, (48, 16))
    q, _ = round_gptq(w, x.T @ x / len(x))
    np.testing.assert_array_equal(q[5], round_nearest(w)[0][5])


def _linear(w: np.ndarray):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 64, w.shape[0]), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(x, relax.const(w)))
        bb.emit_func_output(out)
    return bb.get()


def test_gptq_rounding_in_a_calibrated_model():
    """``int8:rounding=gptq`` through calibration, rewrite and build: on held-out inputs the int8
    layer's output error is below round to nearest's, and the manifest entry says which ran."""
    rng = np.random.default_rng(5)
    width = 128
    mix = rng.normal(size=(6, width)).astype(np.float32)
    sample = lambda: {"x": (rng.normal(size=(1, 64, 6)) @ mix).astype(np.float32)}  # noqa: E731
    calib, held = [sample() for _ in range(16)], [sample() for _ in range(6)]
    w = rng.normal(0, 0.05, (width, 48)).astype(np.float32)
    mod = _linear(w)
    vm = lambda m: relax.VirtualMachine(compile_module(m, HOST), tvm.cpu())  # noqa: E731
    ref = vm(mod)
    errors = {}
    for rounding in ("nearest", "gptq"):
        cfg = QuantOptions.from_options(
            {"observer": "minmax", "smooth": "0", "act": "dynamic", "bias_correction": "off", "rounding": rounding},
            False,
        )
        result = quantize_model(mod, calib, ["x"], cfg, lambda m: compile_module(m, HOST))
        assert result.to_json(cfg)["rounding"] == rounding
        q = vm(result.mod)
        out = lambda m, s: m["main"](tvm.runtime.tensor(s["x"])).numpy()  # noqa: E731
        errors[rounding] = sum(float(np.sum((out(q, s) - out(ref, s)) ** 2)) for s in held)
    assert errors["gptq"] < 0.7 * errors["nearest"], errors


@pytest.mark.parametrize(
    "value, message",
    [
        ("adaround", "rounding must be one of nearest, gptq, got 'adaround' (AdaRound is not built"),
        ("up", "rounding must be one of nearest, gptq, got 'up'"),
    ],
)
def test_rounding_option_is_checked(value, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
        QuantOptions.from_options({"rounding": value}, False)


def test_too_few_calibration_rows_round_to_nearest():
    """A second moment summed over fewer rows than twice the layer's inputs (with fewer than its
    inputs it cannot have full rank) would fit the weights to those rows: they are rounded to
    nearest instead."""
    rng = np.random.default_rng(6)
    w = rng.normal(0, 0.1, (64, 16))
    x = _correlated(rng, rng.normal(size=(8, 64)), 127)
    few = InputMoments(second=x.T @ x / len(x), rows=len(x))
    np.testing.assert_array_equal(few.rounded("linear.0", w)[0], round_nearest(w)[0])
    enough = InputMoments(second=x.T @ x / len(x), rows=128)
    np.testing.assert_array_equal(enough.rounded("linear.0", w)[0], round_gptq(w, x.T @ x / len(x))[0])
