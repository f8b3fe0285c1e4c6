"""Find GELU in a Relax function, whatever form the exporter wrote it in.

``relax.nn.gelu`` / ``gelu_tanh`` are one binding. ONNX exporters decompose GELU into elementwise
ops on scalar constants: ``x * 0.5 * (1 + erf(x / sqrt 2))`` (erf form, in several orders) or
``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (tanh form, with ``pow`` or ``x*x*x``).
Rather than list the orders, a region is accepted by what it computes: every ``erf``/``tanh``
seeds a search for a variable ``x`` whose elementwise forward closure (ops whose other operands
are scalar constants or vars of the closure) contains it, and for the first var ``y`` of that
closure whose ancestors in it are used nowhere else; the region is GELU if, evaluated in numpy on a
dense grid of ``x`` in [-8, 8], it matches the erf or the tanh form within float32 rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tvm import relax
from tvm.ir.expr import Constant

from edgecompile.ir.walk import bindings

ELEMENTWISE = {
    "relax.add",
    "relax.subtract",
    "relax.multiply",
    "relax.divide",
    "relax.power",
    "relax.erf",
    "relax.tanh",
}
GRID = np.linspace(-8.0, 8.0, 3201, dtype=np.float32)
TOLERANCE = 1e-5  # float32 evaluation of either form; the two forms differ by up to 4.7e-4
_erf = np.vectorize(math.erf, otypes=[np.float64])


@dataclass
class GeluRegion:
    x: relax.Var  # the input
    y: relax.Var  # the output
    form: str  # erf | tanh
    interior: list[relax.Var]  # the region's vars other than y, in graph order


def _op(value) -> str:
    return getattr(getattr(value, "op", None), "name", "") if isinstance(value, relax.Call) else ""


def _scalar(e) -> bool:
    return isinstance(e, Constant) and e.value.numpy().size == 1


def gelu_reference(x: np.ndarray, form: str = "erf") -> np.ndarray:
    x = x.astype(np.float64)
    if form == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _evaluate(region: list, x: relax.Var, y: relax.Var) -> np.ndarray:
    """The region on :data:`GRID`, by the reference interpreter (float32, as the graph states)."""
    from edgecompile.ir.interpret import evaluate_bindings

    with np.errstate(all="ignore"):
        return evaluate_bindings(region, {x: GRID})[y]


def find_gelu_regions(func: relax.Function) -> list[GeluRegion]:
    """Every GELU of ``func`` (one op or a decomposed region), in graph order."""
    binds = list(bindings(func))
    producer = {b.var: b for b in binds}
    order = {b.var: i for i, b in enumerate(binds)}
    users: dict = {}
    for b in binds:
        for v in relax.analysis.free_vars(b.value):
            users.setdefault(v, []).append(b.var)
    for v in relax.analysis.free_vars(func.body.body):
        users.setdefault(v, []).append(None)

    regions, taken = [], set()
    for b in binds:
        op = _op(b.value)
        if op in ("relax.nn.gelu", "relax.nn.gelu_tanh") and isinstance(b.value.args[0], relax.Var):
            regions.append(GeluRegion(b.value.args[0], b.var, "tanh" if op.endswith("tanh") else "erf", []))
            taken.add(b.var)
        elif op in ("relax.erf", "relax.tanh") and b.var not in taken:
            found = _region_around(b, producer, users, order)
            if found is not None:
                regions.append(found)
                taken.update([found.y, *found.interior])
    return sorted(regions, key=lambda r: order[r.y])


def _candidates(seed, producer) -> list[relax.Var]:
    """Vars upstream of ``seed`` through elementwise ops: the possible GELU inputs, nearest first."""
    out, frontier, seen = [], [seed.var], set()
    while frontier:
        v = frontier.pop(0)
        b = producer.get(v)
        if b is None or _op(b.value) not in ELEMENTWISE:
            continue
        for a in b.value.args:
            if isinstance(a, relax.Var) and a not in seen:
                seen.add(a)
                out.append(a)
                frontier.append(a)
    return out


def _region_around(seed, producer, users, order) -> GeluRegion | None:
    for x in _candidates(seed, producer):
        closure, members = [], {x}
        for v in sorted((u for u in _descendants(x, users, producer)), key=order.get):
            b = producer[v]
            args = b.value.args
            if _op(b.value) in ELEMENTWISE and all(
                (a in members) if isinstance(a, relax.Var) else _scalar(a) for a in args
            ):
                closure.append(b)
                members.add(b.var)
        if seed.var not in members:
            continue
        for i, b in enumerate(closure):
            if order[b.var] < order[seed.var]:
                continue
            region = _ancestors_in(b, closure[: i + 1], x)
            inner = {r.var for r in region} - {b.var}
            if any(u not in inner and u != b.var for v in inner for u in users.get(v, [])):
                continue  # an intermediate escapes: not a closed region
            got = _evaluate(region, x, b.var)
            for form in ("erf", "tanh"):
                if np.all(np.abs(got - gelu_reference(GRID, form)) <= TOLERANCE * np.maximum(1, np.abs(GRID))):
                    return GeluRegion(x, b.var, form, [r.var for r in region if r.var != b.var])
    return None


def _descendants(x, users, producer, limit: int = 64) -> set:
    seen, frontier = set(), [x]
    while frontier and len(seen) < limit:
        v = frontier.pop()
        for u in users.get(v, []):
            if u is not None and u not in seen and _op(producer[u].value) in ELEMENTWISE:
                seen.add(u)
                frontier.append(u)
    return seen


def _ancestors_in(b, closure, x) -> list:
    """The bindings of ``closure`` that ``b`` depends on (with ``b``), in order."""
    by_var = {c.var: c for c in closure}
    need, stack = set(), [b.var]
    while stack:
        v = stack.pop()
        if v in need or v not in by_var:
            continue
        need.add(v)
        stack.extend(a for a in by_var[v].value.args if isinstance(a, relax.Var) and not a.same_as(x))
    return [c for c in closure if c.var in need]
