"""Where a model's time goes, kernel by kernel, with the runtime library alone.

TVM 0.27's Relax VM has no profiler, but it calls an *instrument* before every call it makes. We
run the model once with one that records each kernel call with the very arguments the VM passes
(the planned arena's tensors, the mapped weights), then time each recorded call on its own:
``repeats`` calls back to back, the median kept. Decision: isolated, warm-cache times rather than
timing inside the run, because a Python callback around every call would add microseconds of its
own to each kernel; the price is that a kernel is timed with its operands in cache. The whole run
is also timed without the instrument; what the kernels' sum does not explain (the VM's
interpretation, shape checks, allocation from the pools, cold caches) is reported as ``outside``.
GOP/s comes from the manifest's per-kernel operation estimate (``kernels``), where there is one.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class KernelTime:
    name: str
    rule: str | None
    calls: int  # per run
    total_ms: float  # per run
    mean_us: float  # per call
    share: float  # of the measured run
    gops: float | None  # estimated operations per second, 1e9


@dataclass(frozen=True)
class Profile:
    run_ms: float  # median whole run, no instrument
    kernels: list[KernelTime]  # most time first
    outside_ms: float  # run_ms less the kernels' sum (never below 0)
    repeats: int

    def to_json(self) -> dict:
        return {**asdict(self), "kernels": [asdict(k) for k in self.kernels]}


def record_calls(vm, args: list) -> list[tuple[str, object, tuple]]:
    """``(symbol, function, arguments)`` of every call ``vm``'s ``main`` makes for ``args``, in order
    (the VM's own builtins, ``vm.builtin.*``, left out)."""
    calls: list = []

    def instrument(func, symbol, before_run, _ret, *call_args):
        if before_run and not str(symbol).startswith("vm.builtin."):
            calls.append((str(symbol), func, call_args))
        return 0  # VMInstrumentReturnKind.NO_OP: run the call

    vm["set_instrument"](instrument)
    try:
        vm["main"](*args)
    finally:
        vm["set_instrument"](None)
    return calls


def profile_calls(calls, run_ms: float, kernels: list[dict], repeats: int, sync) -> Profile:
    """Time each recorded call ``repeats`` times (median) and aggregate per kernel."""
    known = {k["name"]: k for k in kernels}
    per: dict[str, list[float]] = {}
    for symbol, func, args in calls:
        func(*args)  # warm
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            func(*args)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
        per.setdefault(symbol, []).append(statistics.median(times))
    rows = []
    for name, times in per.items():
        total = sum(times)
        info = known.get(name, {})
        ops = info.get("ops")
        gops = ops * len(times) / (total * 1e6) if ops and total > 0 else None
        rows.append(
            KernelTime(name, info.get("rule"), len(times), total, total / len(times) * 1e3, total / run_ms, gops)
        )
    rows.sort(key=lambda k: -k.total_ms)
    return Profile(run_ms, rows, max(0.0, run_ms - sum(k.total_ms for k in rows)), repeats)
