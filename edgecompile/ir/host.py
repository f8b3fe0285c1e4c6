"""Running a module on this machine: calibration, sensitivity, gates and reports all call a built
Relax module with numpy arrays and read numpy back. The build itself is the caller's (a stage gets
``ctx.host_build``), so this floor module needs no backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tvm
from tvm import relax

from edgecompile.runtime.model import flatten_outputs


def host_vm(executable) -> relax.VirtualMachine:
    """A Relax VM on this machine's CPU for a built executable."""
    return relax.VirtualMachine(executable, tvm.cpu())


class HostFunction:
    """``main`` of a module built for this machine, called with numpy arrays (positionally or as a
    ``{name: array}`` sample); returns its outputs flattened to a list of numpy arrays."""

    def __init__(self, mod, build: Callable, input_names: Sequence[str] | None = None, entry: str = "main"):
        self.vm = host_vm(build(mod))
        self.fn = self.vm[entry]
        self.names = list(input_names) if input_names is not None else None

    def raw(self, *args):
        """The VM's own return value (tensors, nested tuples)."""
        if len(args) == 1 and isinstance(args[0], dict):
            args = tuple(args[0][n] for n in self.names)
        return self.fn(*[a if isinstance(a, tvm.runtime.Tensor) else tvm.runtime.tensor(np.asarray(a)) for a in args])

    def __call__(self, *args) -> list[np.ndarray]:
        return flatten_outputs(self.raw(*args))

    def first(self, *args) -> np.ndarray:
        """The first output alone."""
        return self(*args)[0]
