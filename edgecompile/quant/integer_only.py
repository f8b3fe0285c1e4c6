"""The ``int8-integer-only`` recipe's handlers (:data:`edgecompile.quant.rewriter.Handler`):
integer softmax, GELU, LayerNorm, tanh, embeddings, concats and adds, which with the int8 recipe's
linear layers and matmuls leave no float arithmetic between the input quantize and the output
dequantize. :data:`edgecompile.quant.registry.INTEGER_ONLY` maps the layer kinds to them.

Tensors are int8 at a scale (:class:`edgecompile.quant.rewriter.Int8`) or int32 at a scale
(:class:`edgecompile.quant.rewriter.Acc`, per channel after a linear or LayerNorm); an op reads the
finest form it can. What each op emits:

- ``softmax`` over the last axis, on the int32 logits at their own scale (straight from the
  ``Q K^T`` accumulator, mask added in integers): I-ViT's Shiftmax (``ivit``: rounded, ``n = 15``,
  the row summed in int64, logits rescaled first when the exp's ``2 I0 2^15`` (``I0 = 1/S``)
  would pass 31 bits; no constant depends on the row length, so a ranged artifact's builds and a static
  artifact of any length compute a row alike) or
  I-BERT's i-exp softmax (``ibert``: int64 inside, logits at no finer scale than ``2^-13``); both
  normalize each row with a 64-bit reciprocal (I-ViT's 32-bit one keeps too few bits on long or
  flat rows: ``nonlinear.shiftmax``). Out:
  ``[0, 2^15 - 1]`` at ``2^-15`` (int32), which the ``P V`` integer matmul reads as int16.
- ``gelu`` (one op, or any erf/tanh decomposition :mod:`edgecompile.ir.gelu_match` recognises):
  ShiftGELU on the int8 input (``ivit``; as a 256-entry table built by the same integer
  arithmetic: its per-element division would cost more than the float GELU; inputs past the int8
  range, when it reaches 3, pass through as ``GELU(x) = x``) or i-GELU on a 16-bit
  input (``ibert``, int64 inside, shifted back into int32; no division).
- ``layernorm`` over the last axis (constant gamma/beta): I-LayerNorm (integer mean, sum of squares in
  int64, exact integer square root) on a per-tensor input of at most 16 bits; gamma becomes a per
  channel output scale and beta an int32 offset. ``ibert`` uses the same integer-sqrt LayerNorm.
- ``tanh`` (BERT's pooler): ``2 sigmoid(2x) - 1`` from ShiftExp, 16-bit output (a table too).
- ``add`` of two integer tensors or of one and a constant, and ``concat``: every operand rescaled
  (dyadically) to a fine scale ``S_y / FINE`` and kept as int16-range values in int32, so residual
  streams feed LayerNorm with 16 bits, not 8. An add of an integer tensor and a float tensor
  computed from the inputs (an additive attention mask) quantizes the float side at the integer
  side's scale (clipped to ``+-2^29``) and adds in int32: masks of -10000 or -inf stay exact.
- ``embedding``: int8 rows times a per-row integer multiplier (``round(S_row / S_e)``, ``S_e`` = the
  largest row scale / 2^12), int32 out.

Per-op choices come from the recipe (``ops=ivit|ibert`` and ``softmax=``, ``gelu=``, ``layernorm=``,
``tanh=`` overrides, ``float`` keeping that op in float with explicit (de)quantization around it:
:mod:`edgecompile.quant.options`); a nonlinear whose input is float stays float too.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from edgecompile.intref import nonlinear as nl
from edgecompile.ir.layers import Layer
from edgecompile.ir.ops import const_array
from edgecompile.quant import emit as iop
from edgecompile.quant.rewriter import P_BITS, P_LEVELS, Acc, Rewriter, rescale

op = relax.op
FINE = 64  # residual-stream tensors: int16-range values at the calibrated scale / FINE (4x headroom)
FINE_MAX = 2**15 - 1
GELU_TAIL_MIN = 3.0  # ShiftGELU passes x through beyond the int8 range when that range reaches this
RESIDUAL_HEADROOM = 1.25  # over the calibration maximum, for a 16-bit residual-stream tensor
MASK_MAX = 2**29  # a quantized additive mask is clipped here, so logit + mask stays in int32
IBERT_MIN_SCALE = 2.0**-13  # i-exp's int64 widths hold for logits at no finer scale than this
EMBED_BITS = 12


def _lookup(table: np.ndarray, q: relax.Expr) -> relax.Expr:
    """``table[q + 128]`` for int8 ``q``: an op of one int8 input is a 256-entry table, filled at
    compile time by the op's own integer arithmetic (:mod:`edgecompile.intref.nonlinear`), so the
    kernel gathers instead of dividing per element and the result is the same bit for bit."""
    idx = op.add(op.astype(q, "int32"), relax.const(np.int32(128), "int32"))
    return op.take(relax.const(table.astype(np.int32), "int32"), idx, axis=0)


def _fine(rw: Rewriter, layer: Layer, total: relax.Expr, s_fine: float) -> None:
    """The layer's output is ``total`` (int64) saturated to 16 bits, in int32 at ``s_fine``."""
    rw.set_acc(layer, op.astype(op.clip(total, -FINE_MAX, FINE_MAX), "int32"), s_fine, narrow=True)


def _rescaled(rw: Rewriter, x, s: float, s_new: float) -> relax.Expr:
    y = op.clip(rescale(x, s / s_new), -(2**31) + 1, 2**31 - 1)
    return rw.bb.emit(op.astype(y, "int32"))


def add(rw: Rewriter, layer: Layer) -> bool:
    """Of integer tensors, constants and float tensors computed from layer outputs (a float
    LayerNorm's output is the next block's residual; a float linear layer's output plus its bias is
    a branch), all at a fine 16-bit scale; of an integer tensor and a float one computed from the
    inputs alone (an additive mask), the float side at the integer side's scale."""
    args = layer.binding.value.args
    ints = [a for a in args if isinstance(a, relax.Var) and not rw.is_float(a)]
    floats = [a for a in args if isinstance(a, relax.Var) and rw.is_float(a) and a not in rw.activations]
    if not ints:
        return False
    if floats:  # an additive mask computed from the inputs: added at the logits' own scale
        x, s = rw.as_int(ints[0])
        total = op.add(op.astype(x, "int64"), rw.to_scale(floats[0], s, MASK_MAX))
        rw.set_acc(layer, op.astype(op.clip(total, -(2**31) + 1, 2**31 - 1), "int32"), s)
        layer.info = {"scale_in": s, "mask": True}
        return True
    # the residual stream keeps its rare huge channels (BERT's FFN writes 200 into one channel
    # where the percentile is 12): its 16 bits cover the largest value calibration saw
    s_fine = max(rw.scale[layer.output] / FINE, RESIDUAL_HEADROOM * rw.maxima.get(layer.output, 0.0) / FINE_MAX)
    _fine(rw, layer, op.add(rw.to_scale(args[0], s_fine), rw.to_scale(args[1], s_fine)), s_fine)
    layer.info = {"scale_out": rw.scale[layer.output]}
    return True


def concat(rw: Rewriter, layer: Layer) -> bool:
    call = layer.binding.value
    s_fine = rw.scale[layer.output] / FINE
    parts = [op.clip(rw.to_scale(f, s_fine), -FINE_MAX, FINE_MAX) for f in call.args[0].fields]
    _fine(rw, layer, relax.Call(call.op, [relax.Tuple(parts)], call.attrs), s_fine)
    layer.info = {"scale_out": rw.scale[layer.output]}
    return True


def softmax(rw: Rewriter, layer: Layer) -> bool:
    """Shiftmax (``ivit``) or i-exp (``ibert``) on the integer logits; ``[0, 2^15 - 1]`` at ``2^-15``
    out (both normalize in int64, so the extra bits are real: 8 bits rounded a probability of
    1/257, the mean over a ViT-S row, to one step)."""
    x, s = rw.as_int(layer.inputs[0])
    impl = rw.impl_of(layer)
    if impl == "ivit":
        s_new = iop.shiftmax_input_scale(s)
        if s_new != s:  # logits too fine for a 31-bit exp at n = 15
            x, s = _rescaled(rw, x, s, s_new), s_new
        y = iop.emit_shiftmax(x, s, iop.SHIFTMAX_N, P_BITS + 1, rounding=True, wide=True, bb=rw.bb)
    else:
        if s < IBERT_MIN_SCALE:
            x, s = _rescaled(rw, x, s, IBERT_MIN_SCALE), IBERT_MIN_SCALE
        y = iop.emit_ibert_softmax(x, s, k=P_BITS, bb=rw.bb)
    # the P V matmul reads it as int16 (Rewriter.as_probabilities)
    rw.set_acc(layer, y, 1.0 / P_LEVELS, narrow=True)
    layer.info = {"impl": impl, "scale_in": s, "scale_out": 1.0 / P_LEVELS}
    return True


def gelu(rw: Rewriter, layer: Layer) -> bool:
    """ShiftGELU as a table of the int8 input (``ivit``) or i-GELU of a 16-bit input (``ibert``)."""
    impl = rw.impl_of(layer)
    if impl == "ivit":
        _shift_gelu(rw, layer)
    else:
        _i_gelu(rw, layer)
    layer.info = {"impl": impl, "form": layer.region.form, "scale_out": rw.scale[layer.output]}
    return True


def _shift_gelu(rw: Rewriter, layer: Layer) -> None:
    x = layer.inputs[0]
    e = rw.env.get(x)
    if isinstance(e, Acc) and 127 * e.out_scale >= GELU_TAIL_MIN:
        # past the int8 range GELU(x) = x (to 0.4% from 3 on): the rare huge activations
        # real BERTs have (25 where the 99.99th percentile is 12) pass through unclipped. The int8
        # q the table reads is the same rescale clipped further (as_quant's requantize: the same
        # ratio), so the accumulator is rescaled once, not twice (64-bit multiplies per element).
        s = e.out_scale
        # int32 from here on (|wide| <= 2^23, so wide * 128 fits): the GEMM's epilogue writes it
        wide = op.clip(rescale(e.expr, np.asarray(e.scale, np.float64) / s), -(2**23), 2**23)
        wide = rw.bb.emit(op.astype(wide, "int32"))
        if x not in rw.qcache:  # as as_quant would have it: other readers and the sensitivity record see it
            rw.qcache[x] = (rw.bb.emit(op.astype(op.clip(wide, -128, 127), "int8"), name_hint=f"{x.name}_q"), s)
        q = rw.qcache[x][0]
        y = _lookup(nl.shift_gelu(np.arange(-128, 128), s), q)
        tail = op.multiply(wide, relax.const(np.int32(128), "int32"))
        y = op.where(op.greater(wide, relax.const(np.int32(127), "int32")), tail, y)
        rw.set_acc(layer, y, s / 128)
    else:
        q, s = rw.as_quant(x)
        y = _lookup(nl.shift_gelu(np.arange(-128, 128), s), q)
        rw.set_acc(layer, y, s / 128, narrow=True)  # |q * sigma| <= 2^14


def _i_gelu(rw: Rewriter, layer: Layer) -> None:
    x = layer.inputs[0]
    s = rw.scale[x] / FINE
    x16 = op.clip(rw.to_scale(x, s), -FINE_MAX, FINE_MAX)
    y, sy = iop.emit_i_gelu(x16, s)
    bound = iop.i_gelu_bound(s, FINE_MAX)
    shift = max(0, bound.bit_length() - 31)  # back into int32
    rw.set_acc(layer, op.astype(op.right_shift(y, relax.const(np.int64(shift), "int64")), "int32"), sy * 2**shift)


def layernorm(rw: Rewriter, layer: Layer) -> bool:
    """I-LayerNorm of a per-tensor input of at most 16 bits; gamma a per-channel output scale,
    beta an int32 offset."""
    call = layer.binding.value
    x, _ = rw.as_int(layer.inputs[0], narrow=True)
    channels = int(layer.output.ty.shape.values[-1])
    gamma, beta = (const_array(a).astype(np.float64).reshape(-1) for a in call.args[1:3])
    y, s = iop.emit_i_layernorm(rw.bb, x, channels)
    g = np.where(np.abs(gamma) < 1e-6, np.where(gamma < 0, -1e-6, 1e-6), gamma)
    scale = s * g
    bq = np.clip(np.floor(beta / scale + 0.5), -(2**30 - 1), 2**30 - 1).astype(np.int32)
    rw.set_acc(layer, op.add(y, relax.const(bq, "int32")), scale)
    layer.info = {"impl": rw.impl_of(layer), "scale_out": rw.scale[layer.output]}
    return True


def tanh(rw: Rewriter, layer: Layer) -> bool:
    """``2 sigmoid(2x) - 1`` from ShiftExp, as a table of the int8 input; 16-bit output."""
    q, s = rw.as_quant(layer.inputs[0])
    rw.set_acc(layer, _lookup(nl.shift_tanh(np.arange(-128, 128), s), q), 2.0**-15, narrow=True)
    layer.info = {"impl": rw.impl_of(layer), "scale_out": rw.scale[layer.output]}
    return True


def embedding(rw: Rewriter, layer: Layer) -> bool:
    """int8 rows times a per-row integer multiplier; int32 out."""
    call = layer.binding.value
    table = const_array(call.args[0])
    s = np.abs(table).max(axis=1).astype(np.float64) / 127.0
    s = np.where(s > 0, s, s.max() if s.max() > 0 else 1.0)
    q = np.clip(np.rint(table / s[:, None]), -127, 127).astype(np.int8)
    s_e = float(s.max()) / 2**EMBED_BITS
    mult = np.rint(s / s_e).astype(np.int32)
    ids = rw.as_float(call.args[1]) if isinstance(call.args[1], relax.Var) else call.args[1]
    rows = op.astype(relax.Call(call.op, [relax.const(q, "int8"), ids], call.attrs), "int32")
    m = relax.Call(call.op, [relax.const(mult, "int32"), ids], call.attrs)
    rw.set_acc(layer, op.multiply(rows, op.expand_dims(m, -1)), s_e)
    layer.info = {"scale_out": rw.scale[layer.output]}
    return True
