"""The compile-time check that zero padding leaves a ranged artifact's outputs unchanged.

For each group, an input at each bucket size runs on its own build and, zero-padded, on the next
build up (the other groups at their smallest size); the padded run's outputs, cut back, must equal the exact
run's within :data:`TOLERANCE` of the output's largest magnitude. Float builds differ only in the
order of their sums (the padded keys' attention weights are exactly zero); int8 builds may flip a
rounding step, which the tolerance allows. A model that attends to its padding (no mask, or one
it ignores) differs by far more, and its compile fails rather than give silently wrong answers
between bucket sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecompile.errors import InputSpecError

TOLERANCE = 2e-2


def check_padding(staging: Path, ranged: dict, weights: dict | None, imported, sample: dict | None) -> list[float]:
    """Run the check on the builds staged in ``staging``; returns each compared output's error
    (relative to its largest magnitude); raises :class:`InputSpecError` where one is above tolerance."""
    from edgecompile.runtime import tvm_ffi_runtime as rt
    from edgecompile.runtime.buckets import build_shapes, pad_to, slice_outputs
    from edgecompile.runtime.model import flatten_outputs
    from edgecompile.runtime.weights import map_weights

    builds = ranged["builds"]
    specs = [s.to_json() for s in imported.inputs]
    outputs = [s.to_json() for s in imported.outputs]
    views = map_weights(staging, weights) if weights else []
    dev = rt.device("cpu")
    feeds = sample if sample is not None else _synthetic(imported.inputs)

    mains: dict[int, object] = {}  # build index -> its main, loaded once (middle builds serve two pairs)

    def run(i: int, shapes: dict) -> list[np.ndarray]:
        """Build ``i`` on the feeds cut to ``shapes``, zero-padded to the build's own shapes."""
        if i not in mains:
            mains[i] = rt.make_vm(rt.ffi().load_module(str(staging / builds[i]["library"])), dev)["main"]
        main = mains[i]
        into = build_shapes(ranged, specs, i)
        cut = {s["name"]: feeds[s["name"]][tuple(slice(0, n) for n in shapes[s["name"]])] for s in specs}
        args = [rt.to_device(np.ascontiguousarray(pad_to(cut[s["name"]], into[s["name"]])), dev) for s in specs]
        return flatten_outputs(main(*args, *(rt.view(views[k]) for k in builds[i]["weights"])))

    smallest = builds[0]["sizes"]
    index = {tuple(sorted(b["sizes"].items())): i for i, b in enumerate(builds)}
    errors = []
    for group, entry in ranged["groups"].items():
        for lo, hi in zip(entry["buckets"], entry["buckets"][1:]):  # every size against the next one up
            sizes = {**smallest, group: lo}
            small, big = index[tuple(sorted(sizes.items()))], index[tuple(sorted({**sizes, group: hi}.items()))]
            exact_shapes = build_shapes(ranged, specs, small)
            exact = run(small, exact_shapes)
            padded = slice_outputs(ranged, outputs, run(big, exact_shapes), sizes)
            for spec, a, b in zip(outputs, exact, padded):
                err = (
                    float(np.abs(a.astype(np.float64) - b).max() / max(float(np.abs(a).max()), 1e-30))
                    if a.size
                    else 0.0
                )
                errors.append(err)
                if err > TOLERANCE:
                    raise InputSpecError(
                        f"zero padding changes output '{spec['name']}' by {err:.1%} of its range ({group} {lo} run "
                        f"exactly vs padded to {hi}): the model does not mask its padding, so a ranged artifact would "
                        "answer wrongly between bucket sizes; compile a fixed shape per length instead"
                    )
    return errors


def check_padding_on_host(imports, combos: list[dict], ranged: dict, sample: dict | None, build_host) -> list[float]:
    """:func:`check_padding` for an artifact this machine cannot run (a GPU, another CPU): on the
    imported float graphs of each group's two smallest buckets, built for this machine's CPU by
    ``build_host(mod, out_dir) -> built`` (its ``arrays``: the weights). Whether a model masks its
    padding is a property of its graph, not of the target, so one pair per group settles it."""
    import tempfile

    from edgecompile.artifact.weights_blob import write_weights
    from edgecompile.ranged.shared_weights import SharedWeights

    first = {g: e["buckets"][:2] for g, e in ranged["groups"].items()}
    keep = [i for i, c in enumerate(combos) if all(c[g] in sizes for g, sizes in first.items())]
    shared, builds = SharedWeights(), []
    with tempfile.TemporaryDirectory(prefix="edgecompile-padding-") as tmp:
        for i in keep:
            scratch = Path(tmp) / f"build{i}"
            scratch.mkdir()
            built = build_host(imports[i].mod, scratch)
            builds.append({"sizes": combos[i], "library": f"build{i}/{built.library.file.name}",
                           "weights": shared.add(built.arrays)})  # fmt: skip
        section = write_weights(shared.arrays, Path(tmp))
        groups = {g: {**e, "buckets": first[g]} for g, e in ranged["groups"].items()}
        sub = {**ranged, "groups": groups, "builds": builds}
        return check_padding(Path(tmp), sub, section, imports[keep[-1]], sample)


def _synthetic(specs) -> dict[str, np.ndarray]:
    """Check inputs where no calibration sample is given: normal floats, table indices spread over
    their valid range, ones for other integers (an attention mask that keeps every token)."""
    rng = np.random.default_rng(0)
    out = {}
    for s in specs:
        dt = np.dtype(s.dtype)
        if dt.kind == "f":
            out[s.name] = rng.standard_normal(s.shape).astype(dt)
        elif s.valid_range is not None:
            out[s.name] = rng.integers(max(s.valid_range[0], 0), s.valid_range[1] + 1, s.shape).astype(dt)
        else:
            out[s.name] = np.ones(s.shape, dt)
    return out
