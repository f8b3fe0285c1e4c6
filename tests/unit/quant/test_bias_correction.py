"""Bias correction (``int8:bias_correction=on``): the mean shift rounded int8 weights put on a linear
layer's output, from its input's per-channel means in calibration, goes into the bias."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from edgecompile.errors import RecipeError
from edgecompile.lower.build import compile_module
from edgecompile.quant.options import QuantOptions
from edgecompile.quant.plan import quantize_model
from edgecompile.targets import get_profile

HOST = get_profile("native").resolved()


def _build(mod):
    return compile_module(mod, HOST)


def _linear(w: np.ndarray, b: np.ndarray | None):
    """x[1, 32, IN] @ w (+ b): one linear layer."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 32, w.shape[0]), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = relax.op.matmul(x, relax.const(w))
            out = bb.emit_output(relax.op.add(y, relax.const(b)) if b is not None else y)
        bb.emit_func_output(out)
    return bb.get()


def _samples(rng, n: int, width: int) -> list[dict]:
    """Inputs far from zero mean (a ReLU's or GELU's output): the weights' rounding error then moves
    the output's mean."""
    return [{"x": (3.0 + 0.3 * rng.normal(size=(1, 32, width))).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("act, bias", [("static", True), ("dynamic", True), ("static", False)])
def test_bias_correction_removes_the_mean_shift_of_rounded_weights(act, bias):
    """On held-out inputs, the output's mean error per channel falls to a small part of what round
    to nearest leaves (int8 static and run-time scales; a layer without a bias gets one)."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (256, 48)).astype(np.float32)
    w[0] = 4.0  # one large weight per column: a coarse per-column weight step
    b = rng.normal(0, 0.1, 48).astype(np.float32) if bias else None
    mod = _linear(w, b)
    calib, held = _samples(rng, 16, 256), _samples(rng, 8, 256)
    vm = lambda m: relax.VirtualMachine(_build(m), tvm.cpu())  # noqa: E731
    ref = vm(mod)
    errors = {}
    for correct in ("off", "on"):
        cfg = QuantOptions.from_options({"observer": "minmax", "smooth": "0", "act": act, "bias_correction": correct},
                                        False)  # fmt: skip
        q = vm(quantize_model(mod, calib, ["x"], cfg, _build).mod)
        diff = [q["main"](tvm.runtime.tensor(s["x"])).numpy() - ref["main"](tvm.runtime.tensor(s["x"])).numpy()
                for s in held]  # fmt: skip
        errors[correct] = np.abs(np.mean(diff, axis=(0, 1, 2))).mean()  # mean error per output channel
    assert errors["on"] < 0.2 * errors["off"], errors


def test_bias_correction_option_is_checked():
    with pytest.raises(RecipeError, match="bias_correction must be on or off, got 'yes'"):
        QuantOptions.from_options({"bias_correction": "yes"}, False)
