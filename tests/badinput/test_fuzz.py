"""Property-based fuzzing (hypothesis) of what parses user text and files: the CLI's assignment,
shape and recipe parsers, target names, the manifest reader on mutated (resealed) manifests, the
runtime's input check, and ``run``'s command line. The property: a result or one of our errors,
never another exception (and never a library load)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from badinput_support import cli
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import edgecompile
from edgecompile.errors import EdgeCompileError
from edgecompile.frontend.spec import parse_assignments, parse_shape
from edgecompile.recipe import parse_recipe
from edgecompile.runtime.manifest import read_verified, seal
from edgecompile.targets import get_profile

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
recipe_text = st.lists(
    st.sampled_from(["int8", "fp32", "fp16", "lowrank", "hash-attention", "int8-integer-only", "+", ":", ",", "=",
                     "ratio", "0.5", "%", "observer", "mse", "x", "[", "]", ";", "keep_float", "1e999", "-1"]),
    max_size=10,
).map("".join)  # fmt: skip


@FAST
@given(st.lists(text, max_size=4))
def test_assignments_parse_or_say_why(items):
    try:
        parsed = parse_assignments(items, "--input-shape")
    except EdgeCompileError:
        return
    assert all("=" in i for i in items) and len(parsed) == len(items)


@FAST
@given(text)
def test_shapes_parse_or_say_why(value):
    try:
        shape = parse_shape(value)
    except EdgeCompileError:
        return
    assert all(isinstance(d, int) and d >= 0 for d in shape)


@FAST
@given(st.one_of(text, recipe_text))
def test_recipes_parse_or_say_why(value):
    """Any recipe text parses into stages or is refused with our error (a parse error, or parts that
    parse but do not combine: ``int8+fp32``, ``fp32+fp32``), never another exception."""
    try:
        recipe = parse_recipe(value)
        recipe.stages(exclusive=True) if recipe.parts else None
    except EdgeCompileError as e:
        assert str(e)


@FAST
@given(text)
def test_target_names_resolve_or_say_why(name):
    try:
        get_profile(name)
    except EdgeCompileError:
        pass


def _mutations():
    leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), text)
    value = st.recursive(leaf, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(text, c, max_size=3)),
                         max_leaves=6)  # fmt: skip
    keys = st.sampled_from(["target", "inputs", "outputs", "library", "files", "device_code", "format_version",
                            "recipe", "weights_bytes", "inputs.0", "inputs.0.shape", "inputs.0.valid_range",
                            "inputs.0.dtype", "target.arch", "target.cpu_features", "files.model.so"])  # fmt: skip
    return st.lists(st.tuples(keys, st.one_of(value, st.just("<delete>"))), min_size=1, max_size=3)


def _apply(manifest: dict, key: str, value) -> None:
    parts = key.split(".", 1) if not key.startswith("files.") else ["files", "model.so"]
    node, last = manifest, parts[-1]
    if len(parts) == 2:
        node = manifest.get(parts[0])
        rest = parts[1].split(".")
        for p in rest[:-1]:
            node = node[int(p)] if isinstance(node, list) and p.isdigit() and int(p) < len(node) else None
            if node is None:
                return
        last = rest[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        last = int(last)
    elif not isinstance(node, dict):
        return
    if value == "<delete>":
        node.pop(last, None) if isinstance(node, dict) else node.pop(last)
    else:
        node[last] = value


@FAST
@given(_mutations())
def test_mutated_resealed_manifests_are_read_or_refused(embed_artifact, canary_lib, tmp_path_factory, edits):
    art = tmp_path_factory.mktemp("fuzz") / "art"
    shutil.copytree(embed_artifact, art)
    m = json.loads((art / "manifest.json").read_text())
    for key, value in edits:
        _apply(m, key, value)
    (art / "manifest.json").write_bytes(seal(m))
    try:
        read_verified(art)
        edgecompile.load(art)
    except EdgeCompileError:
        pass
    assert not canary_lib[1].exists()


@pytest.fixture(scope="module")
def model(embed_artifact):
    return edgecompile.load(embed_artifact)


arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=9),
    elements=None,
)


@FAST
@given(ids=arrays, x=arrays)
def test_random_feeds_run_or_say_why(model, ids, x):
    try:
        out = model.run({"ids": ids, "x": x})
    except EdgeCompileError:
        return
    assert np.isfinite(out["y"]).all()  # accepted inputs are in range and finite


RUN_WORDS = ["--threads", "0", "-1", "2", "--input", "x=", "ids=", "--output", "o.npz", "", "--trusted-key",
             "--require-signature", "-i", "a=b=c", "--bogus"]  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(RUN_WORDS), max_size=6))
def test_run_command_lines_end_cleanly(embed_artifact, args):
    r = cli("run", embed_artifact, *args)
    assert r.exit_code in (0, 2), r.output
    assert "Traceback" not in r.output and "internal error" not in r.output


@pytest.fixture(scope="module")
def signed_copy(embed_artifact, tmp_path_factory):
    from edgecompile.artifact.signing import generate_key, sign_artifact

    d = tmp_path_factory.mktemp("signed")
    key = generate_key(d / "key")[0]
    art = d / "art"
    shutil.copytree(embed_artifact, art)
    sign_artifact(art, key)
    return art, key.with_name("key.pub")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.sampled_from(["manifest.json", "model.so", "weights.bin", "manifest.sig"]),
    where=st.floats(0, 1),
    bit=st.integers(0, 7),
)
@example(which="manifest.sig", where=0.9609375, bit=1)  # once accepted: base64 ignores its padding bits
def test_a_signed_artifact_with_any_bit_flipped_is_refused(signed_copy, tmp_path_factory, which, where, bit):
    src, pub = signed_copy
    art = tmp_path_factory.mktemp("flip") / "art"
    shutil.copytree(src, art)
    data = bytearray((art / which).read_bytes())
    data[min(int(where * len(data)), len(data) - 1)] ^= 1 << bit
    (art / which).write_bytes(bytes(data))
    with pytest.raises(EdgeCompileError):
        edgecompile.load(art, trusted_keys=[pub])
