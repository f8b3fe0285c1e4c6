"""Running a model on calibration samples and streaming chosen intermediate tensors to observers.

The float function is re-emitted with the wanted tensors appended to its outputs, built for this
machine by the caller's ``build`` (our CPU pipeline), and run sample by sample; each captured
tensor goes to its observer and is dropped, so memory holds one sample's activations at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

from edgecompile.calibrate.observers import Observer
from edgecompile.passes.graph_walk import bindings, emit_binding, substitute

Progress = Callable[[int, int], None]


def with_outputs(func: relax.Function, wanted: list[relax.Var]) -> tvm.IRModule:
    """``func`` returning ``(original outputs, *wanted)``."""
    bb = relax.BlockBuilder()
    params = [relax.Var(p.name, p.ty) for p in func.params]
    with bb.function("main", params, attrs=dict(func.attrs) if func.attrs else None):
        with bb.dataflow():
            m = dict(zip(func.params, params))
            for b in bindings(func):
                m[b.var] = emit_binding(bb, b, substitute(b.value, m))
            out = bb.emit_output(relax.Tuple([substitute(func.body.body, m), *[m[v] for v in wanted]]))
        bb.emit_func_output(out)
    return bb.get()


class Runner:
    """A module built for this machine, called with ``{name: array}`` samples."""

    def __init__(self, mod: tvm.IRModule, input_names: list[str], build: Callable):
        self.vm = relax.VirtualMachine(build(mod), tvm.cpu())
        self.names = input_names
        self.build = build

    def __call__(self, sample: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = self.vm["main"](*[tvm.runtime.tensor(sample[n]) for n in self.names])
        return [t.numpy() for t in list(out)[1:]]  # the appended tensors


def observe(
    run: Runner,
    wanted: list[relax.Var],
    samples: list[dict],
    make_observer: Callable[[], Observer],
    progress: Progress | None = None,
) -> dict[relax.Var, Observer]:
    """One observer per wanted tensor, fed by every sample; ``run`` is the float function built
    by ``Runner(with_outputs(func, wanted), ...)``."""
    observers = {v: make_observer() for v in wanted}
    for i, sample in enumerate(samples):
        for v, value in zip(wanted, run(sample)):
            observers[v].observe(value)
        if progress:
            progress(i + 1, len(samples))
    return observers
