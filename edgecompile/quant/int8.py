"""The ``int8`` recipe's handlers (:data:`edgecompile.quant.rewriter.Handler`): linear layers,
activation matmuls, adds of two integer tensors and embeddings, emitted in integers."""

from __future__ import annotations

import numpy as np
from tvm import relax

from edgecompile import intref
from edgecompile.intref.wide import LOW_BITS
from edgecompile.ir.layers import Layer
from edgecompile.ir.ops import const_array
from edgecompile.quant.rewriter import Acc, Float, Int8, Rewriter, rescale
from edgecompile.quant.rounding import InputMoments, round_nearest


def _bias(layer: Layer) -> np.ndarray | None:
    """The constant bias added after ``layer``'s matmul, flat; None without one."""
    if layer.bias_binding is None:
        return None
    (bias,) = [c for a in layer.bias_binding.value.args if (c := const_array(a)) is not None]
    return bias.reshape(-1)


def _weights(layer: Layer, w: np.ndarray, sigma, moments: InputMoments | None) -> tuple[np.ndarray, np.ndarray]:
    """``layer``'s int8 weights ``w`` and their scales per output channel, times the smoothing
    ``sigma``: rounded by GPTQ where ``moments`` hold the input's second moment over enough rows
    (that of ``x / sigma`` where smoothed), else to nearest (:mod:`edgecompile.quant.rounding`)."""
    w = w if sigma is None else (w * sigma[:, None]).astype(np.float32)
    return round_nearest(w) if moments is None else moments.rounded(layer.name, w, sigma)


def _gemm(rw: Rewriter, layer: Layer, xq: relax.Expr, sigma) -> tuple[relax.Expr, np.ndarray, np.ndarray | None]:
    """The int32 accumulator of int8 ``xq`` times ``layer``'s int8 weights, the weight scales, and
    the bias to add (:func:`_corrected_bias`)."""
    w = const_array(layer.binding.value.args[1])
    wq, sw = _weights(layer, w, sigma, rw.moments.get(layer.inputs[0]))
    acc = rw.bb.emit(relax.op.matmul(xq, relax.const(wq, "int8"), out_dtype="int32"), name_hint=f"{layer.name}_acc")
    return acc, sw, _corrected_bias(rw, layer, w, wq, sw, sigma)


def _corrected_bias(rw: Rewriter, layer: Layer, w, wq: np.ndarray, sw: np.ndarray, sigma) -> np.ndarray | None:
    """``layer``'s bias; with bias correction (``int8:bias_correction=on``, the input's per-channel
    mean ``E[x]`` from calibration) less the mean shift of its output that rounding the weights
    causes, ``E[x] (W_q S_w / sigma - W)`` (Nagel et al., data-free quantization; NNCF's bias
    correction): the output's mean over calibration then matches the float layer's for the
    weights' part of the error. A layer without a bias gets one."""
    bias = _bias(layer)
    moments = rw.moments.get(layer.inputs[0])
    if moments is None or moments.mean is None:
        return bias
    effective = wq.astype(np.float64) * sw[None, :]
    if sigma is not None:
        effective = effective / sigma[:, None]
    shift = np.asarray(moments.mean, np.float64) @ (effective - w.astype(np.float64))
    return -shift if bias is None else bias - shift


def _activation_matmul(rw: Rewriter, layer: Layer, aq, bq, wide: bool) -> relax.Expr:
    """int8 x int8 -> int32 of two activations; with ``wide`` (an int16 probability left
    operand, :meth:`Rewriter.as_probabilities`) int16 x int16 -> int32, ``bq`` widened."""
    if wide:
        bq = relax.op.astype(bq, "int16")
    return rw.bb.emit(relax.op.matmul(aq, bq, out_dtype="int32"), name_hint=f"{layer.name}_acc")


def _weight_info(sw: np.ndarray, sigma) -> dict:
    return {
        "weight_scale_min": float(sw.min()),
        "weight_scale_max": float(sw.max()),
        **({"smoothing": [float(sigma.min()), float(sigma.max())]} if sigma is not None else {}),
    }


def linear(rw: Rewriter, layer: Layer) -> bool:
    """int8 ``x`` (smoothed where calibration chose it), int8 ``W`` per output channel, int32
    accumulation plus the int32 bias: an :class:`Acc` at ``S_x * S_w[c]``."""
    if rw.is_wide(layer) and (done := _wide_linear(rw, layer)) is not None:
        return done
    if rw.is_dynamic(layer):
        done = _row_shifted_linear(rw, layer) if rw.integer_only else _dynamic_linear(rw, layer)
        if done is not None:
            return done
    xq, sx, sigma = rw.as_quant_smoothed(layer.inputs[0])
    acc, sw, bias = _gemm(rw, layer, xq, sigma)
    if bias is not None:
        bq = np.clip(np.rint(bias / (sx * sw)), -(2**31), 2**31 - 1).astype(np.int32)
        acc = rw.bb.emit(relax.op.add(acc, relax.const(bq, "int32")), name_hint=f"{layer.name}_bias")
    sy = rw.scale[layer.output]
    rw.env[layer.output] = Acc(acc, sx * sw, sy)
    layer.info = {"act": "static", "scale_in": sx, "scale_out": sy, **_weight_info(sw, sigma)}
    return True


def _dynamic_linear(rw: Rewriter, layer: Layer) -> bool:
    """:func:`linear` with a scale per row of ``x`` computed at run time
    (:func:`edgecompile.intref.dynamic_quantize`, after smoothing where calibration chose it): the
    int32 accumulator is dequantized, ``float32(acc) * S_row * S_w[c]``, and the bias added in float."""
    xq, sx, sigma = rw.as_dynamic(layer.inputs[0], -1, smoothed=True)
    acc, sw, bias = _gemm(rw, layer, xq, sigma)
    y = relax.op.multiply(relax.op.multiply(relax.op.astype(acc, "float32"), sx), relax.const(sw.astype(np.float32)))
    _float_output(rw, layer, y, bias)
    layer.info = {"act": "dynamic", **_weight_info(sw, sigma)}
    return True


def _float_output(rw: Rewriter, layer: Layer, y: relax.Expr, bias: np.ndarray | None) -> None:
    """The layer's output is the dequantized float32 ``y`` plus the bias, in float."""
    if bias is not None:
        y = relax.op.add(y, relax.const(bias.astype(np.float32)))
    rw.env[layer.output] = Float(rw.bb.emit(y, name_hint=layer.name))


def _fine_output(rw: Rewriter, layer: Layer, y: relax.Expr, bias: np.ndarray | None, s_fine: float) -> None:
    """Integer-only: the layer's output is the int64 ``y`` at ``s_fine`` plus the bias rounded to
    that scale, saturated to int32."""
    if bias is not None:
        y = relax.op.add(y, relax.const(np.clip(np.rint(bias / s_fine), -(2**40), 2**40).astype(np.int64), "int64"))
    rw.set_acc(layer, relax.op.astype(relax.op.clip(y, -(2**31 - 1), 2**31 - 1), "int32"), s_fine)


def _wide_linear(rw: Rewriter, layer: Layer) -> bool | None:
    """:func:`linear` on an int16 input (``int8:a16=``, :mod:`edgecompile.intref.wide`): the input's
    two int8 bytes stacked on a new leading axis through one int8 GEMM, the halves combined as
    ``256 hi + lo``: dequantized in float in ``int8``; in the integer-only recipe in int64, by a
    23-bit dyadic multiplier to ``1/FINE`` of the output's calibrated int8 step, plus the bias there.
    None where the input is held per channel (the int8 path serves it)."""
    held = rw.as_wide(layer.inputs[0])
    if held is None:
        return None
    z, sx = held
    low = relax.const(LOW_BITS, "int32")
    hi = relax.op.right_shift(relax.op.add(z, relax.const(1 << (LOW_BITS - 1), "int32")), low)
    lo = relax.op.subtract(z, relax.op.left_shift(hi, low))
    pair = relax.op.concat([relax.op.expand_dims(relax.op.astype(t, "int8"), 0) for t in (hi, lo)], axis=0)
    acc, sw, bias = _gemm(rw, layer, rw.bb.emit(pair, name_hint=f"{layer.name}_bytes"), None)
    # 256 hi + lo as a sum over the stacked axis (no slicing: one fused reduction)
    weights = np.array([1 << LOW_BITS, 1]).reshape([2] + [1] * (acc.ty.ndim - 1))
    if not rw.integer_only:
        t = relax.op.sum(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(weights, "float32")), [0])
        _float_output(rw, layer, relax.op.multiply(t, relax.const((sx * sw).astype(np.float32))), bias)
        layer.info = {"act": "a16", "scale_in": sx, **_weight_info(sw, None)}
        return True
    s_fine = rw.scale[layer.output] / FINE
    b, c = intref.dyadic_wide(np.float64(sx) * sw / s_fine)
    i64 = lambda a: relax.const(np.asarray(a, np.int64), "int64")  # noqa: E731
    t = relax.op.sum(relax.op.multiply(relax.op.astype(acc, "int64"), i64(weights)), [0])
    y = relax.op.right_shift(relax.op.add(relax.op.multiply(t, i64(b)), i64(np.int64(1) << (c - 1))), i64(c))
    _fine_output(rw, layer, y, bias, s_fine)
    layer.info = {"act": "a16", "scale_in": sx, "scale_out": s_fine, **_weight_info(sw, None)}
    return True


FINE = 256  # a row-shifted linear's int32 output is kept at 1/256 of its calibrated int8 step


def _row_shifted_linear(rw: Rewriter, layer: Layer) -> bool | None:
    """Integer-only :func:`linear` with a power-of-two scale per row of ``x`` chosen at run time
    (:func:`edgecompile.intref.row_shift_quantize`): the int32 accumulator at
    ``S_x 2^shift S_w[c]`` is rescaled by :func:`edgecompile.intref.rescale_shifted` to one scale
    for the whole tensor, ``1/FINE`` of the output's calibrated int8 step, plus the bias there:
    integers throughout. None where ``x`` is float (the static path quantizes it)."""
    held = rw.as_row_shifted(layer.inputs[0])
    if held is None:
        return None
    q, shift, sz, sigma = held
    acc, sw, bias = _gemm(rw, layer, q, sigma)
    s_fine = rw.scale[layer.output] / FINE
    ratio = np.float64(sz) * sw / s_fine  # negative after I-BERT's GELU (its scale carries erf's a < 0)
    b, c = intref.dyadic_shifted(np.abs(ratio))
    b = np.where(ratio < 0, -b, b)
    i64 = lambda a: relax.const(np.asarray(a, np.int64), "int64")  # noqa: E731
    d = relax.op.clip(relax.op.subtract(i64(c), shift), 1, 63)
    one = relax.op.left_shift(i64(1), relax.op.subtract(d, i64(1)))
    y = relax.op.right_shift(relax.op.add(relax.op.multiply(relax.op.astype(acc, "int64"), i64(b)), one), d)
    _fine_output(rw, layer, y, bias, s_fine)
    layer.info = {"act": "dynamic", "scale_out": s_fine, **_weight_info(sw, sigma)}
    return True


def matmul(rw: Rewriter, layer: Layer) -> bool:
    """Both activations int8 (softmax probabilities int16 at ``2^-15``:
    :meth:`Rewriter.as_probabilities`), int32 accumulation. Dynamic: the left operand scaled per
    row, the right per column, at run time (probabilities keep their fixed scale: their range is
    [0, 1] on every row); the result dequantized."""
    if rw.is_dynamic(layer):
        return _dynamic_matmul(rw, layer)
    probs = rw.as_probabilities(layer.inputs[0])
    (aq, sa), (bq, sb) = probs or rw.as_quant(layer.inputs[0]), rw.as_quant(layer.inputs[1])
    acc = _activation_matmul(rw, layer, aq, bq, probs is not None)
    sy = rw.scale[layer.output]
    rw.env[layer.output] = Acc(acc, np.float64(sa) * sb, sy)
    layer.info = {"act": "static", "scale_in": [sa, sb], "scale_out": sy}
    return True


def _dynamic_matmul(rw: Rewriter, layer: Layer) -> bool:
    probs = rw.as_probabilities(layer.inputs[0])
    if probs is not None:
        aq, sa = probs[0], relax.const(np.float32(probs[1]))
    else:
        aq, sa, _ = rw.as_dynamic(layer.inputs[0], -1)
    bq, sb, _ = rw.as_dynamic(layer.inputs[1], -2, weights=aq if probs is not None else None)
    acc = _activation_matmul(rw, layer, aq, bq, probs is not None)
    y = relax.op.multiply(relax.op.multiply(relax.op.astype(acc, "float32"), sa), sb)
    rw.env[layer.output] = Float(rw.bb.emit(y, name_hint=layer.name))
    layer.info = {"act": "dynamic", **({"scale_in": [float(probs[1])]} if probs is not None else {})}
    return True


def embedding(rw: Rewriter, layer: Layer) -> bool:
    """The table stored int8 with a scale per row; gathered rows are dequantized (float output)."""
    call = layer.binding.value
    table = const_array(call.args[0])
    s = np.abs(table).max(axis=1) / 127.0
    s = np.where(s > 0, s, 1.0).astype(np.float32)
    q = np.clip(np.rint(table / s[:, None]), -127, 127).astype(np.int8)
    ids = rw.as_float(call.args[1]) if isinstance(call.args[1], relax.Var) else call.args[1]
    rows = relax.Call(call.op, [relax.const(q, "int8"), ids], call.attrs)
    scales = relax.Call(call.op, [relax.const(s, "float32"), ids], call.attrs)
    y = relax.op.multiply(relax.op.astype(rows, "float32"), relax.op.expand_dims(scales, -1))
    rw.env[layer.output] = Float(rw.bb.emit(y, name_hint=layer.name))
    layer.info = {"scale_out_min": float(s.min()), "scale_out_max": float(s.max())}
    return True


def add(rw: Rewriter, layer: Layer) -> bool:
    """Of two integer tensors only (a float operand keeps the add in float): each rescaled to the
    output scale, summed, saturated to int8."""
    a, b = layer.inputs
    if rw.is_float(a) or rw.is_float(b):
        return False
    (qa, sa), (qb, sb) = rw.as_quant(a), rw.as_quant(b)
    sy = rw.scale[layer.output]
    total = relax.op.add(rescale(qa, np.float64(sa) / sy), rescale(qb, np.float64(sb) / sy))
    y = relax.op.astype(relax.op.clip(total, -128, 127), "int8")
    rw.env[layer.output] = Int8(rw.bb.emit(y, name_hint=layer.name), sy)
    layer.info = {"scale_in": [sa, sb], "scale_out": sy}
    return True
