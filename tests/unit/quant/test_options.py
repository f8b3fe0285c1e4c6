"""The int8 recipe options (parsed and validated without TVM or numpy) and the handler tables."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from edgecompile.errors import RecipeError
from edgecompile.quant.options import OBSERVERS, QuantOptions


def test_parsing_options_imports_neither_tvm_nor_numpy():
    code = (
        "import sys; from edgecompile.quant.options import QuantOptions; "
        "QuantOptions.from_options({'ops': 'ibert'}, True); "
        "print(sorted(m for m in ('tvm', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_observer_names_are_the_calibration_observers():
    from edgecompile.calibrate.observers import OBSERVERS as CALIBRATION_OBSERVERS

    assert OBSERVERS == CALIBRATION_OBSERVERS


def test_from_options():
    options = QuantOptions.from_options(
        {"observer": "mse", "samples": "8", "keep_float": "linear.0;matmul.*", "keep_worst": "2", "smooth": "0.5"},
        integer_only=False,
    )
    assert options == QuantOptions("mse", 99.99, 8, ("linear.0", "matmul.*"), (), 0.5, 2)
    assert not options.integer_only and QuantOptions.from_options({}, False) == QuantOptions()
    assert QuantOptions.from_options({"max_drop": "0.5%"}, False).max_drop == 0.005
    assert QuantOptions.from_options({"max_drop": "0.02"}, True).max_drop == 0.02
    io = QuantOptions.from_options({"ops": "ibert", "gelu": "ivit", "tanh": "float"}, integer_only=True)
    assert io.integer_only and not io.bias_correction  # on by default in int8 only (options.BIAS_CORRECTION)
    assert QuantOptions.from_options({"bias_correction": "on"}, True).bias_correction
    assert not QuantOptions.from_options({"bias_correction": "off"}, False).bias_correction
    assert io.nonlinear == (("gelu", "ivit"), ("layernorm", "ibert"), ("softmax", "ibert"), ("tanh", "float"))
    # the default: I-ViT's ops with I-BERT's GELU (options.DEFAULT_FLAVOR's decision)
    default = dict(QuantOptions.from_options({}, True).nonlinear)
    assert default == {"softmax": "ivit", "gelu": "ibert", "layernorm": "ivit", "tanh": "ivit"}
    assert dict(QuantOptions.from_options({"ops": "ivit"}, True).nonlinear)["gelu"] == "ivit"


@pytest.mark.parametrize(
    "options, integer_only, message",
    [
        ({"observer": "median"}, False, "int8: unknown observer 'median' (choose minmax, percentile, mse, entropy)"),
        ({"observer": "median", "samples": "x"}, False, "unknown observer"),  # before the malformed number
        ({"percentile": "x"}, False, "int8: option percentile='x' is not a number"),
        ({"samples": "2.5"}, True, "int8-integer-only: option samples='2.5' is not a whole number"),
        ({"percentile": "20"}, False, "int8: percentile must be in (50, 100], got 20.0"),
        ({"smooth": "2"}, False, "int8: smooth must be auto or in [0, 1] (0: off), got 2.0"),
        ({"samples": "0"}, False, "int8: samples must be at least 1"),
        ({"ops": "tflite"}, True, "int8-integer-only: ops must be one of mixed, ivit, ibert, got 'tflite'"),
        ({"ops": "tflite", "percentile": "20"}, True, "percentile must be"),  # int8 options first
        ({"softmax": "fast", "tanh": "ibert"}, True, "int8-integer-only: softmax must be one of ivit, ibert, float"),
        ({"tanh": "ibert"}, True, "int8-integer-only: tanh must be one of ivit, float, got 'ibert'"),
        ({"max_drop": "1 point"}, True, "int8-integer-only: max_drop takes a number or a percentage (1%), got"),
        ({"metric": "top1"}, False, "int8: metric must be one of cosine, pearson, got 'top1'"),
        ({"max_drop": "150%"}, False, "int8: max_drop must be in [0, 1) or a percentage below 100%, got 1.5"),
    ],
)
def test_option_errors(options, integer_only, message):
    with pytest.raises(RecipeError) as e:
        QuantOptions.from_options(options, integer_only)
    assert message in str(e.value)


def test_options_are_validated_however_built():
    with pytest.raises(RecipeError, match="percentile"):
        QuantOptions(percentile=20.0)
    with pytest.raises(RecipeError, match="gelu must be"):
        dataclasses.replace(QuantOptions(), nonlinear=(("gelu", "exact"),))


def test_handler_tables():
    from edgecompile.quant import int8, integer_only
    from edgecompile.quant.registry import INT8, INTEGER_ONLY, handlers

    assert handlers() == INT8 and set(INT8) == {"linear", "matmul", "add", "embedding"}
    assert INTEGER_ONLY["linear"] is int8.linear and INTEGER_ONLY["add"] is integer_only.add
    io = handlers(dict(QuantOptions.from_options({"softmax": "float"}, True).nonlinear))
    assert "softmax" not in io and io["gelu"] is integer_only.gelu and io["concat"] is integer_only.concat
