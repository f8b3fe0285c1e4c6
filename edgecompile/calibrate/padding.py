"""Calibrating on padded samples without observing the padding (ranged artifacts).

A ranged artifact (:mod:`edgecompile.ranged`) calibrates once, on its largest build, each sample
zero-padded to it. The padded positions are not data: a 40-token email padded to 256 would
otherwise give 216 rows of pad-token activations to every observer, the SmoothQuant channel
statistics, the run-time-scale estimate, the low-rank second moments and the layer errors, and
the scales would describe padding. So every tensor a calibration run returns is cut back, per
sample, to the sample's own sizes along the axes that follow a padded input dimension. Those axes
are found by comparing each tensor's static shape in the largest build with the same tensor (binding
by binding, :func:`edgecompile.ir.walk.matched_vars`) in another build: an axis whose size is the
group's size in both follows that group. An axis that mixes a group with other dimensions (a
flattened ``seq * heads``), or whose group cannot be told apart from another group of the same
sizes, is left whole.

With the padding cut away, the statistics of a sample are those of the sample run at its own
length (up to float rounding of the padded build's reductions), so a ranged artifact and a static
one calibrated on the same samples choose the same scales.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from edgecompile.ir.ops import static_shape
from edgecompile.ir.walk import matched_vars

Axes = dict[int, str]  # axis -> the group whose padded size it has


def cut(value: np.ndarray, axes: Axes | None, sample) -> np.ndarray:
    """``value`` (a tensor of a run on ``sample``, a :class:`edgecompile.calibrate.data.PaddedSample`
    or a plain sample, left whole) without the positions padding added."""
    sizes = getattr(sample, "sizes", None)
    if not axes or sizes is None:
        return value
    return value[tuple(slice(0, sizes[axes[i]]) if i in axes else slice(None) for i in range(value.ndim))]


@dataclass
class Padding:
    """Where calibration samples were padded: the model imported at other sizes (``probe``), the
    groups' sizes in the largest build and in the probe, and the first output's padded axes."""

    probe: tvm.IRModule
    top: dict[str, int]
    other: dict[str, int]
    first: Axes = field(default_factory=dict)

    def axes(self, func: relax.Function, prepare: Callable | None = None) -> dict[relax.Var, Axes]:
        """The padded axes of each tensor of ``func`` (the largest build's graph after ``prepare``,
        which is applied to the probe alike); empty where the graphs do not match."""
        probe = (prepare(self.probe) if prepare is not None else self.probe)["main"]
        vmap = matched_vars(func, probe)
        if vmap is None:
            return {}
        out = {}
        for v, w in vmap.items():
            a, b = static_shape(v), static_shape(w)
            if a is None or b is None or len(a) != len(b):
                continue
            follows = {}
            for axis, (x, y) in enumerate(zip(a, b)):
                groups = [g for g in self.top if x != y and self.top[g] == x and self.other[g] == y]
                if len(groups) == 1:
                    follows[axis] = groups[0]
            if follows:
                out[v] = follows
        return out
