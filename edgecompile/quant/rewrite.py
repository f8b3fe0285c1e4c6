"""The int8 rewrite of a Relax function (:func:`quantize_function`): integer layers with dyadic requantization.

The pass walks ``main`` binding by binding, tracking for every tensor whether it is float or
int8 with a per-tensor scale (``x ~ S * q``), and emits:

- ``linear.N`` — ``matmul(x, W)`` with a constant ``W`` (and a constant bias added after it):
  int8 ``x``, int8 ``W`` symmetric per output channel, int32 accumulation plus an int32 bias at
  scale ``S_x * S_w[c]``, then dyadic requantization per channel to an int8 output at the scale
  calibrated for that output — where an integer op reads it; a float op (GELU, a residual add
  into a float LayerNorm, a masked softmax) reads the int32 accumulator dequantized instead
  (``float(acc) * S_x * S_w[c]``), which is cheaper and skips a rounding;
- ``matmul.N`` — a matmul of two activations (attention's ``Q K^T`` and ``P V``): both int8,
  int32 accumulation, then the same choice of dyadic requantization or dequantization;
- ``add.N`` — an add of two int8 tensors: each requantized to the output scale, summed, saturated;
- ``embedding.N`` — a gather from a constant table (token embeddings): the table is stored int8
  with a scale per row, gathered rows are dequantized (4x smaller tables, float output);
- on int8 tensors, layout ops (reshape, permute_dims, ...) and ReLU stay in int8, and a multiply or
  divide by a positive constant scalar only changes the scale (no code);
- every other op (softmax, GELU, LayerNorm, masks, ...) runs in float: its int8 inputs are
  dequantized, and its output is quantized again where an integer op consumes it.

So inputs are quantized once where a linear layer first reads them, and outputs dequantized once.
Scales of activations come from calibration (:mod:`edgecompile.calibrate`); the integer
semantics are those of :mod:`edgecompile.intref`, which the compiled code matches bit for bit.
Layer names are the kind and its index in graph order (``linear.0``, ``matmul.3``, ``add.1``);
``keep_float`` takes names or fnmatch patterns of layers to leave in float.

This module is the entry point, :func:`quantize_function`. The layers are found by
:mod:`edgecompile.ir.layers`; :class:`edgecompile.quant.rewriter.Rewriter` walks the bindings
and hands each layer to its handler in the recipe's table (:mod:`edgecompile.quant.registry`:
:mod:`edgecompile.quant.int8`, and for ``int8-integer-only`` :mod:`edgecompile.quant.integer_only`).
"""

from __future__ import annotations

import tvm
from tvm import relax

from edgecompile.ir.layers import Layer
from edgecompile.quant.registry import handlers
from edgecompile.quant.rewriter import Rewriter


def quantize_function(
    func: relax.Function,
    layers: list[Layer],
    thresholds: dict,
    keep_float=(),
    extra_outputs: list[relax.Var] | None = None,
    nonlinear: dict[str, str] | None = None,
    smooth: dict | None = None,
    maxima: dict | None = None,
    record: dict | None = None,
    dynamic=(),
    moments: dict | None = None,
    wide=(),
) -> tvm.IRModule:
    """The int8 rewrite of ``func`` (see the module docstring): a module of ``main`` and the TIR
    kernels it calls. ``thresholds`` maps each var of
    :func:`edgecompile.ir.layers.observed_vars` to its clipping value. ``extra_outputs`` appends
    the (dequantized) values of those original vars to the outputs, for measuring per-layer error.
    ``nonlinear`` (op -> implementation) selects the integer-only recipe's handlers
    (:mod:`edgecompile.quant.integer_only`). ``smooth`` maps linear inputs to ``(sigma, threshold
    of x / sigma)`` (:func:`edgecompile.quant.smooth.smoothing_factors`); ``maxima`` the largest
    ``|x|`` calibration saw per var (integer-only: the 16-bit residual stream's range).
    ``record``, if given, receives ``forms`` (:attr:`Rewriter.forms`: which layers were rewritten,
    reading which integer inputs) and ``requantized`` (the layers whose int32 output was
    requantized to int8 for a reader). ``dynamic`` names the linear layers and matmuls whose
    activations are quantized with run-time scales per row (``int8:act=``). ``moments`` (linear input
    -> :class:`edgecompile.quant.rounding.InputMoments`) turns on bias correction (a mean) and GPTQ
    rounding (a second moment) for the layers reading those inputs. ``wide`` names the linear layers
    reading int16 activations (``int8:a16=``, :mod:`edgecompile.intref.wide`)."""
    for layer in layers:
        layer.info = {}
    bb = relax.BlockBuilder()
    params = [relax.Var(p.name, p.ty) for p in func.params]
    rw = Rewriter(
        bb, thresholds, layers, keep_float, handlers(nonlinear), nonlinear, smooth, maxima, dynamic, moments, wide
    )
    with bb.function("main", params, attrs=dict(func.attrs) if func.attrs else None):
        with bb.dataflow():
            out = rw.walk(func, params)
            if extra_outputs:
                out = relax.Tuple([out, *[rw.as_float(v) for v in extra_outputs]])
            out = bb.emit_output(out)
        bb.emit_func_output(out)
    if record is not None:
        record["forms"] = rw.forms
        outputs = {layer.output: layer.name for layer in layers}
        record["requantized"] = {outputs[v] for v in rw.qcache if isinstance(v, relax.Var) and v in outputs}
    return bb.get()
