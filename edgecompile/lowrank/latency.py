"""How long a dense and a factorized linear layer take on the target: the speed gate's evidence.

For a CPU target of this machine each shape is compiled by the target build the stage is given
(``StageContext.target_build``: our pipeline) and timed (median of :data:`RUNS` calls, the runtime's
default threads), once: results are cached per target profile in
``~/.cache/edgecompile/lowrank/<target>.json`` (``EDGECOMPILE_CACHE`` moves the root), so later
compiles of any model with the same shapes reuse them. For other targets (cross-compiled, GPU) the
latency is estimated from multiply-adds with a 25% penalty for the second GEMM's launch and the
thin intermediate, i.e. factorizing pays below ``0.8 r*`` (the notes' CPU measurements).
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np

RUNS = 20
PENALTY = 1.25  # estimated cost of two GEMMs with a thin intermediate, per multiply-add


def cache_root() -> Path:
    return Path(os.environ.get("EDGECOMPILE_CACHE", Path.home() / ".cache" / "edgecompile")) / "lowrank"


class LatencyTable:
    """Milliseconds of ``x[T, in] @ W[in, out]`` (dense) and ``(x @ P[in, r]) @ Q[r, out]``;
    ``build`` compiles an IRModule for ``profile`` (used only when measuring)."""

    def __init__(self, profile, build: Callable | None, measure: bool | None = None):
        self.profile = profile
        self.build = build
        self.measure = profile.is_host_arch and profile.tvm.get("kind") == "llvm" if measure is None else measure
        self.path = cache_root() / f"{profile.name}.json"
        self.table: dict[str, float] = {}
        if self.measure and self.path.is_file():
            try:
                self.table = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                self.table = {}

    def dense(self, tokens: int, n_in: int, n_out: int) -> float:
        return self._get((tokens, n_in, n_out))

    def factored(self, tokens: int, n_in: int, rank: int, n_out: int) -> float:
        return self._get((tokens, n_in, rank, n_out))

    def _get(self, dims: tuple[int, ...]) -> float:
        if not self.measure:
            t, *widths = dims
            macs = t * sum(a * b for a, b in zip(widths, widths[1:]))
            return macs * (PENALTY if len(widths) == 3 else 1.0) * 1e-6  # arbitrary unit: only ratios matter
        key = "x".join(map(str, dims))
        if key not in self.table:
            self.table[key] = _time(dims, self.build)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.table, indent=1, sort_keys=True))
        return self.table[key]


def _time(dims: tuple[int, ...], build: Callable | None) -> float:
    import tvm
    from tvm import relax

    from edgecompile.ir.host import host_vm
    from edgecompile.runtime.model import time_calls

    if build is None:
        raise ValueError("lowrank: measuring latencies needs the target build (StageContext.target_build)")
    t, *widths = dims
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((t, widths[0]), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = x
            for a, b in zip(widths, widths[1:]):
                w = rng.standard_normal((a, b)).astype(np.float32) / np.sqrt(a)
                y = bb.emit(relax.op.matmul(y, relax.const(w)))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    vm = host_vm(build(bb.get()))
    arg = tvm.runtime.tensor(rng.standard_normal((t, widths[0])).astype(np.float32))
    return statistics.median(time_calls(lambda: vm["main"](arg), RUNS))
