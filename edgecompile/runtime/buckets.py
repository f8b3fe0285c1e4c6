"""Ranged artifacts at run time: check an input's shape against its ranges, pick the bucket that
holds it, pad the inputs into it and slice the outputs back (design: :mod:`edgecompile.ranged`).

The manifest's ``ranged`` section::

    {"groups": {"seq": {"range": [1, 256], "buckets": [16, 32, 64, 128, 256]}},
     "dims": [{"input": "input_ids", "axis": 1, "group": "seq"}, ...],
     "outputs": {"token_states": {"1": "seq"}},           # output axes that follow a group
     "builds": [{"sizes": {"seq": 16}, "library": "model.seq16.so", "weights": [0, 1, ...]}, ...]}

Each build's ``weights`` lists the indices, into the weights section's tensors, of the tensors its
``main`` takes after the inputs. Numpy and the standard library only.
"""

from __future__ import annotations

import numpy as np

from edgecompile.errors import ArtifactError, InputMismatchError


def input_sizes(section: dict, specs: list[dict], shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """The size of each group in ``shapes`` (the feeds' shapes), checked: fixed dimensions equal,
    ranged ones inside their range, and the dimensions of one group agreeing."""
    ranged = {(d["input"], d["axis"]): d["group"] for d in section["dims"]}
    groups = section["groups"]
    sizes: dict[str, tuple[int, str]] = {}
    for spec in specs:
        name, want = spec["name"], spec["shape"]
        got = shapes[name]
        if len(got) != len(want):
            raise InputMismatchError(
                f"input '{name}' has {len(got)} dimensions ({'x'.join(map(str, got))}), the model takes "
                f"{len(want)} ({describe_input(section, spec)})"
            )
        for axis, (g, w) in enumerate(zip(got, want)):
            group = ranged.get((name, axis))
            if group is None:
                if g != w:
                    raise InputMismatchError(
                        f"input '{name}' has size {g} in dimension {axis}, the model takes {w} there "
                        f"({describe_input(section, spec)})"
                    )
                continue
            lo, hi = groups[group]["range"]
            if not lo <= g <= hi:
                raise InputMismatchError(
                    f"input '{name}' has size {g} in dimension {axis} ('{group}'), outside the range "
                    f"{lo}..{hi} the artifact was compiled for"
                )
            seen = sizes.setdefault(group, (g, name))
            if seen[0] != g:
                raise InputMismatchError(
                    f"inputs '{seen[1]}' and '{name}' disagree on '{group}' (dimension {axis}): {seen[0]} vs {g}; "
                    "they must have the same size"
                )
    return {g: s for g, (s, _) in sizes.items()}


def pick_build(section: dict, sizes: dict[str, int]) -> int:
    """Index of the smallest build whose every group size holds ``sizes``."""
    best = None
    for i, b in enumerate(section["builds"]):
        if all(b["sizes"][g] >= s for g, s in sizes.items()):
            cost = np.prod([b["sizes"][g] for g in b["sizes"]])
            if best is None or cost < best[0]:
                best = (cost, i)
    if best is None:  # the largest build holds every size in range: only an edited manifest gets here
        raise ArtifactError("no build of this ranged artifact holds the input: the manifest was edited")
    return best[1]


def build_shapes(section: dict, specs: list[dict], build: int) -> dict[str, tuple[int, ...]]:
    """The static input shapes of build ``build``."""
    sizes = section["builds"][build]["sizes"]
    out = {s["name"]: list(s["shape"]) for s in specs}
    for d in section["dims"]:
        out[d["input"]][d["axis"]] = sizes[d["group"]]
    return {k: tuple(v) for k, v in out.items()}


def pad_to(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` zero-padded at the end of each dimension to ``shape`` (``a`` itself when it fits)."""
    if tuple(a.shape) == tuple(shape):
        return a
    out = np.zeros(shape, a.dtype)
    out[tuple(slice(0, n) for n in a.shape)] = a
    return out


def slice_outputs(section: dict, outputs: list[dict], values: list[np.ndarray], sizes: dict[str, int]) -> list:
    """Each output cut back to the groups' real sizes along the axes that follow them."""
    follows = section.get("outputs", {})
    out = []
    for spec, v in zip(outputs, values):
        axes = follows.get(spec["name"], {})
        if axes:
            index = [slice(None)] * v.ndim
            for axis, group in axes.items():
                index[int(axis)] = slice(0, sizes[group])
            v = np.ascontiguousarray(v[tuple(index)])
        out.append(v)
    return out


def ranged_shape(section: dict, spec: dict) -> str:
    """An input's shape with its ranges: ``1x1..256``."""
    dims = [str(d) for d in spec["shape"]]
    for d in section["dims"]:
        if d["input"] == spec["name"]:
            lo, hi = section["groups"][d["group"]]["range"]
            dims[d["axis"]] = f"{lo}..{hi}"
    return "x".join(dims) or "scalar"


def describe_input(section: dict, spec: dict) -> str:
    """``input_ids[1x1..256 int64]``: the shape with its ranges."""
    return f"{spec['name']}[{ranged_shape(section, spec)} {spec['dtype']}]"
