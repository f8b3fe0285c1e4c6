"""Which static shapes a ranged artifact is built for: the ranged dimensions, grouped, and the
bucket sizes of each group (see :mod:`edgecompile.ranged`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from edgecompile.errors import InputSpecError

MAX_BUCKETS = 5  # per group by default: 256, 128, 64, 32, 16
MAX_BUILDS = 24  # combinations of bucket sizes one artifact may hold


def bucket_sizes(lo: int, hi: int, count: int = MAX_BUCKETS) -> list[int]:
    """Default buckets of ``lo..hi``: ``hi``, then the powers of two below it down to ``lo``, at most
    ``count`` sizes, ascending. ``1..256`` gives 16, 32, 64, 128, 256; ``1..8`` gives 1, 2, 4, 8."""
    sizes = [hi]
    p = 1 << (hi.bit_length() - 1)
    if p == hi:
        p //= 2
    while p >= lo and len(sizes) < count:
        sizes.append(p)
        p //= 2
    return sorted(sizes)


@dataclass(frozen=True)
class RangedDim:
    input: str
    axis: int
    lo: int
    hi: int
    group: str


@dataclass
class RangePlan:
    """The ranged dimensions of a model's inputs and the bucket sizes of each group."""

    base: dict[str, tuple]  # input -> its shape spec (ints and (lo, hi) ranges)
    dims: list[RangedDim]
    sizes: dict[str, list[int]]  # group -> bucket sizes, ascending

    @property
    def groups(self) -> dict[str, tuple[int, int]]:
        return {d.group: (d.lo, d.hi) for d in self.dims}

    def combos(self) -> list[dict[str, int]]:
        """Every combination of bucket sizes, smallest first; the last is the largest."""
        names = list(self.sizes)
        return [dict(zip(names, c)) for c in itertools.product(*(self.sizes[g] for g in names))]

    def shapes(self, combo: dict[str, int]) -> dict[str, tuple[int, ...]]:
        """The static input shapes of one combination."""
        out = {}
        for name, shape in self.base.items():
            dims = list(shape)
            for d in self.dims:
                if d.input == name:
                    dims[d.axis] = combo[d.group]
            out[name] = tuple(dims)
        return out

    def to_json(self) -> dict:
        return {
            "groups": {g: {"range": list(r), "buckets": self.sizes[g]} for g, r in self.groups.items()},
            "dims": [{"input": d.input, "axis": d.axis, "group": d.group} for d in self.dims],
        }


def range_plan(
    shapes: dict[str, tuple], dim_names: dict[str, list[str | None]] | None = None, buckets=None
) -> RangePlan:
    """The :class:`RangePlan` of parsed input ``shapes`` (some dims ``(lo, hi)``); ``dim_names``:
    the model's symbolic dimension names per input (ONNX ``dim_param``), which group dimensions;
    ``buckets``: ``{group: [sizes]}`` replacing the default sizes of a group."""
    dims = []
    for name, shape in shapes.items():
        names = (dim_names or {}).get(name) or []
        for axis, d in enumerate(shape):
            if isinstance(d, tuple):
                sym = names[axis] if axis < len(names) else None
                dims.append(RangedDim(name, axis, d[0], d[1], sym or f"axis{axis}:{d[0]}..{d[1]}"))
    ranges: dict[str, tuple[int, int]] = {}
    for d in dims:
        seen = ranges.setdefault(d.group, (d.lo, d.hi))
        if seen != (d.lo, d.hi):
            raise InputSpecError(
                f"dimension {d.axis} of '{d.input}' is '{d.group}' like another input's, but its range "
                f"{d.lo}..{d.hi} differs from {seen[0]}..{seen[1]}: give the same range"
            )
    sizes = {g: bucket_sizes(*r) for g, r in ranges.items()}
    for g, given in (buckets or {}).items():
        if g not in ranges:
            raise InputSpecError(
                f"--buckets names '{g}', which is not a ranged dimension; those are {', '.join(ranges)}"
            )
        lo, hi = ranges[g]
        chosen = sorted(set(int(s) for s in given))
        if not chosen or any(not lo <= s <= hi for s in chosen) or chosen[-1] != hi:
            raise InputSpecError(f"buckets of '{g}' must lie in {lo}..{hi} and include {hi}, got {given}")
        sizes[g] = chosen
    plan = RangePlan(dict(shapes), dims, sizes)
    n = len(plan.combos())
    if n > MAX_BUILDS:
        raise InputSpecError(
            f"the ranges ask for {n} builds (bucket sizes {sizes}); at most {MAX_BUILDS}: narrow a range or "
            "give fewer sizes with --buckets GROUP=S1,S2,..."
        )
    return plan


def onnx_dim_names(model) -> dict[str, list[str | None]]:
    """``{input: [dim_param or None per axis]}`` of an ONNX file or ModelProto; {} for anything else."""
    from pathlib import Path

    proto = model
    if isinstance(model, (str, Path)):
        if Path(model).suffix != ".onnx":
            return {}
        import onnx

        proto = onnx.load(str(model), load_external_data=False)
    if type(proto).__name__ != "ModelProto":
        return {}
    return {i.name: [d.dim_param or None for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
