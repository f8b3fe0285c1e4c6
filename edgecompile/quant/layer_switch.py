"""One module that quantizes any single layer: the float model with every quantizable layer
computed both ways and a runtime index choosing which one layer reads its integer result.

Per-layer sensitivity ("the metric drop when only that layer is quantized") would otherwise need a
build per layer; this builds once. ``main`` takes one more input, the layer switch of
:mod:`edgecompile.ir.switch` (an int32 vector, one flag per layer in switch order; it may be longer
than the layers switched): ``flags(width, [k])`` runs the model with layer ``k`` alone in integers,
all zeros the float model.

Only the layers the recipe really rewrites get a switch (an int8 residual add between float
tensors stays float in the recipe, so it has none). A layer alone sees each input in the integer
form the full rewrite gave it -- int8 at that scale, or int32 at the accumulator's scale (per
channel after a linear layer), e.g. the logits a softmax reads straight from ``Q K^T`` with the
mask added -- but rounded from the exact float values, so its error is its own, not its
neighbours'; an input the full rewrite read as float is quantized by the layer itself, as in the
recipe. Its output is dequantized, after a requantization to int8 where the full rewrite's
readers took it as int8 (a patch embedding read by layout ops). Both ways are computed on every
run (``where`` picks one), so a run costs about the float and the int8 model together.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from edgecompile.ir.layers import Layer
from edgecompile.ir.switch import choose, switch_var
from edgecompile.ir.walk import emit_binding, substitute
from edgecompile.quant.registry import handlers
from edgecompile.quant.rewriter import Acc, Float, Int8, Rewriter


class SwitchRewriter(Rewriter):
    """A rewriter whose bindings all stay float, each layer's integer result selected by the switch."""

    def start(self, switch: relax.Var, record: dict) -> None:
        self.switch = switch
        self.input_forms = record["forms"]  # from the full rewrite: Rewriter.forms
        self.requantized = record["requantized"]
        self.switched: list[Layer] = []  # in switch order
        self.pending: dict = {}  # layer output var -> (switch value, its integer result)

    def binding(self, b):
        v = b.var
        layer = self.layers.get(v)
        if layer is not None and layer.name in self.input_forms:
            self.alone(layer)
        mapping = {u: self.as_float(u) for u in relax.analysis.free_vars(b.value) if u in self.env}
        y = emit_binding(self.bb, b, substitute(b.value, mapping))
        pending = self.pending.pop(v, None)
        if pending is not None:
            k, alone = pending
            y = self.bb.emit(choose(self.switch, k, alone, y), name_hint=f"{v.name}_switch")
        self.env[v] = Float(y)

    def alone(self, layer: Layer) -> None:
        """Emit ``layer`` in integers from its inputs' float values, each held as the full rewrite
        held it (:meth:`held`); its dequantized result waits in ``pending`` for the float binding."""
        saved = {x: self.env.get(x) for x in layer.inputs}
        caches = (self.qcache, self.fcache)
        self.qcache, self.fcache = {}, {}
        for x, form in self.input_forms[layer.name].items():
            self.env[x] = self.held(x, form)
        if self.rewrite(layer):
            if layer.name in self.requantized and isinstance(self.env.get(layer.output), Acc):
                self.env[layer.output] = Int8(*self.as_quant(layer.output))  # as its readers see it
            self.pending[layer.output] = (len(self.switched), self.as_float(layer.output))
            self.switched.append(layer)
        for x, e in saved.items():
            self.env[x] = e
        self.env.pop(layer.output, None)  # the float binding comes next; downstream reads floats
        self.qcache, self.fcache = caches

    def held(self, x, form: Int8 | Acc) -> Int8 | Acc:
        """The float ``x`` rounded to ``form``: int8 at its scale, or int32 at its scale (per channel
        after a linear layer; within 16 bits where the rewrite kept it narrow)."""
        f = self.as_float(x)
        if isinstance(form, Int8):
            q = relax.op.multiply(f, relax.const(np.float32(1.0 / np.float32(form.scale))))
            q = relax.op.astype(relax.op.clip(relax.op.round(q), -128, 127), "int8")
            return Int8(self.bb.emit(q, name_hint=f"{x.name}_held"), form.scale)
        bound = 2**15 - 1 if form.narrow else 2**31 - 128  # float32 rounds 2^31 - 1 up
        low = -bound
        if x in self.nonneg:  # probabilities: the integer softmax never gives 1.0 (2^15 at 2^-15)
            low, bound = 0, min(bound, int(round(1.0 / float(form.scale))) - 1)
        inv = (1.0 / np.asarray(form.scale, np.float64)).astype(np.float32)
        q = relax.op.clip(relax.op.round(relax.op.multiply(f, relax.const(inv))), low, bound)
        q = self.bb.emit(relax.op.astype(q, "int32"), name_hint=f"{x.name}_held")
        return Acc(q, form.scale, form.out_scale, form.narrow)


def switched_module(
    func: relax.Function,
    layers: list[Layer],
    thresholds: dict,
    record: dict,
    nonlinear: dict[str, str] | None = None,
    smooth: dict | None = None,
    maxima: dict | None = None,
    dynamic=(),
    moments: dict | None = None,
    wide=(),
) -> tuple[tvm.IRModule, list[Layer]]:
    """``func`` with the switch (module docstring) and the layers it can switch, in switch order:
    those in ``record["forms"]`` (:func:`edgecompile.quant.rewrite.quantize_function`'s record
    of the full rewrite, so kept and unconverted layers have no switch); other arguments as
    :func:`edgecompile.quant.rewrite.quantize_function`."""
    for layer in layers:
        layer.info = {}
    bb = relax.BlockBuilder()
    params = [relax.Var(p.name, p.ty) for p in func.params]
    switch = switch_var(max(len(record["forms"]), 1))  # every layer the full rewrite converted
    rw = SwitchRewriter(bb, thresholds, layers, (), handlers(nonlinear), nonlinear, smooth, maxima, dynamic, moments,
                        wide)  # fmt: skip
    with bb.function("main", [*params, switch], attrs=dict(func.attrs) if func.attrs else None):
        with bb.dataflow():
            rw.start(switch, record)
            out = bb.emit_output(rw.walk(func, params))
        bb.emit_func_output(out)
    return bb.get(), rw.switched
