"""`edgecompile package --runtime-only`: the device bundle runs without the compiler, torch, onnx
or (for the native runner) Python, gives the same outputs as the Python runtime, and stays within
the footprint goal; bad requests are clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import EXAMPLE_INPUTS, EXAMPLE_ONNX, EXAMPLE_SHAPES, ROOT

import edgecompile
from edgecompile.artifact.bundle import make_bundle
from edgecompile.errors import ArtifactError

CALIB = ROOT / "examples" / "tiny_bert_calib.npz"
MB = 1e6


@pytest.fixture(scope="module")
def int8_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "art"
    return edgecompile.compile(
        EXAMPLE_ONNX, target="native", recipe="int8-integer-only", calib=CALIB, output=out, input_shapes=EXAMPLE_SHAPES
    )


def run_native(bundle: Path, feeds: dict, tmp: Path, shapes: bool = True) -> dict:
    """Run ``bundle/run_model`` with an empty environment; outputs by name (flat unless ``shapes``:
    shaped as io.txt lists them)."""
    (tmp / "in").mkdir(parents=True)
    (tmp / "out").mkdir()
    for name, value in feeds.items():
        np.ascontiguousarray(value).tofile(tmp / "in" / f"{name}.bin")
    proc = subprocess.run(
        [str(bundle / "run_model"), str(bundle / "model"), str(tmp / "in"), str(tmp / "out"), "5"],
        capture_output=True,
        text=True,
        env={},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "median" in proc.stdout
    outputs = {}
    for line in (bundle / "model" / "io.txt").read_text().splitlines():
        kind, name, dtype, *dims = line.split()
        if kind == "output":
            flat = np.fromfile(tmp / "out" / f"{name}.bin", dtype=dtype)
            outputs[name] = flat.reshape([int(d) for d in dims]) if shapes else flat
    return outputs


def test_native_bundle_matches_the_python_runtime_and_fits(int8_artifact, tmp_path):
    bundle = make_bundle(int8_artifact, tmp_path / "bundle")
    names = sorted(p.relative_to(bundle.root).as_posix() for p in bundle.root.rglob("*") if p.is_file())
    assert names == [
        "bundle.json",
        "lib/libtvm_ffi.so",
        "lib/libtvm_runtime.so",
        "model/io.txt",
        "model/manifest.json",
        "model/model.so",
        "model/weights.bin",
        "run_model",
    ]
    listed = json.loads((bundle.root / "bundle.json").read_text())
    on_disk = [p for p in bundle.root.rglob("*") if p.is_file() and p.name != "bundle.json"]
    assert listed["total_bytes"] == sum(p.stat().st_size for p in on_disk)
    assert listed["weights_bytes"] == (bundle.root / "model" / "weights.bin").stat().st_size > 0
    roles = {f["path"]: f["role"] for f in listed["files"]}
    assert roles["model/weights.bin"] == "model weights" and roles["model/model.so"] == "model code"
    plan = listed["memory_plan"]
    assert plan["arena_bytes"] > 0 and listed["expected_resident_bytes"] > listed["weights_bytes"] + plan["arena_bytes"]
    # the footprint goal of issue 9: at most 8 MB beyond the model's weights on a CPU target
    assert bundle.beyond_weights <= 8 * MB, bundle.by_role()
    feeds = dict(np.load(EXAMPLE_INPUTS))
    expected = edgecompile.load(int8_artifact).run(feeds)
    got = run_native(bundle.root, feeds, tmp_path / "io")
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])  # same library, same integers


def test_python_bundle_runs_with_numpy_alone(int8_artifact, tmp_path):
    bundle = make_bundle(int8_artifact, tmp_path / "bundle", python=True)
    files = {p.relative_to(bundle.root).as_posix() for p in bundle.root.rglob("*") if p.is_file()}
    assert "run.py" in files and "python/tvm/lib/libtvm_runtime.so" in files
    assert not any("compiler" in f or f.startswith(("python/onnx", "python/torch")) for f in files)
    own = {f for f in files if f.startswith("python/edgecompile/") and "/runtime/" not in f}
    assert own == {"python/edgecompile/__init__.py", "python/edgecompile/errors.py", "python/edgecompile/version.py"}
    # a Python with only numpy and ml_dtypes importable: no site-packages, no venv
    deps = tmp_path / "deps"
    deps.mkdir()
    for mod in ("numpy", "ml_dtypes"):
        (deps / mod).symlink_to(Path(__import__(mod).__file__).parent)
    libs = Path(np.__file__).parent.parent / "numpy.libs"
    if libs.is_dir():
        (deps / "numpy.libs").symlink_to(libs)
    out = tmp_path / "out.npz"
    proc = subprocess.run(
        [sys.executable, "-S", str(bundle.root / "run.py"), "--input", str(EXAMPLE_INPUTS), "-o", str(out)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(deps), "PATH": os.environ["PATH"]},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)
    expected = edgecompile.load(int8_artifact).run(dict(np.load(EXAMPLE_INPUTS)))
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_cli_package_lists_sizes_and_refuses_bad_requests(int8_artifact, tmp_path):
    r = subprocess.run(
        ["edgecompile", "package", str(int8_artifact), "--runtime-only", "-o", str(tmp_path / "b")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "runtime library" in r.stdout and "beyond the model's weights" in r.stdout
    # an artifact for another CPU without that CPU's TVM libraries
    cross = edgecompile.compile(
        EXAMPLE_ONNX, target="aarch64-linux", output=tmp_path / "arm", input_shapes=EXAMPLE_SHAPES
    )
    r = subprocess.run(
        ["edgecompile", "package", str(cross), "-o", str(tmp_path / "c")], capture_output=True, text=True
    )
    assert r.returncode != 0 and "pass --runtime-from DIR with the aarch64 wheels" in r.stderr
    assert "Traceback" not in r.stderr
    # --runtime-from holding x86 libraries for an aarch64 artifact
    site = Path(__import__("tvm_ffi").__file__).parents[1]
    with pytest.raises(ArtifactError, match="holds TVM for x86_64, the artifact is for aarch64"):
        make_bundle(cross, tmp_path / "d", runtime_from=site)
    # a tampered artifact is refused before anything is copied
    tampered = tmp_path / "tampered"
    subprocess.run(["cp", "-r", str(int8_artifact), str(tampered)], check=True)
    with open(tampered / "model.so", "r+b") as f:
        f.seek(100)
        f.write(b"\0\1\2\3")
    r = subprocess.run(
        ["edgecompile", "package", str(tampered), "-o", str(tmp_path / "e")], capture_output=True, text=True
    )
    assert r.returncode != 0 and "modified or corrupted" in r.stderr and not (tmp_path / "e").exists()
    # an existing directory that is not a bundle is not overwritten
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not a bundle"):
        make_bundle(int8_artifact, tmp_path / "keep")
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"


def test_ranged_native_bundle_runs_each_length_on_its_build(tmp_path):
    """``run_model`` of a ranged artifact takes inputs of any length in range, runs the build the
    Python runtime picks and writes outputs of the input's length: the same integers, bit for bit."""
    shapes = {"input_ids": "1x1..32", "attention_mask": "1x1..32"}
    art = edgecompile.compile(EXAMPLE_ONNX, "native", tmp_path / "art", input_shapes=shapes, recipe="int8-integer-only",
                              calib=CALIB, buckets={"seq": [16, 32]})  # fmt: skip
    bundle = make_bundle(art, tmp_path / "bundle")
    io = (bundle.root / "model" / "io.txt").read_text()
    assert "group seq 1 32" in io and "axis output last_hidden_state 1 seq" in io
    model = edgecompile.load(art)
    for length in (5, 16, 20):
        feeds = {k: np.ascontiguousarray(v[:, :length]) for k, v in np.load(EXAMPLE_INPUTS).items()}
        expected = model.run(feeds)
        got = run_native(bundle.root, feeds, tmp_path / f"io{length}", shapes=False)
        np.testing.assert_array_equal(got["last_hidden_state"].reshape(1, length, 64), expected["last_hidden_state"])
        np.testing.assert_array_equal(got["pooled"].reshape(1, 64), expected["pooled"])
    (tmp_path / "bad" / "in").mkdir(parents=True)
    (tmp_path / "bad" / "out").mkdir()
    for name in ("input_ids", "attention_mask"):
        np.ones((1, 33), np.int64).tofile(tmp_path / "bad" / "in" / f"{name}.bin")
    cmd = [bundle.root / "run_model", bundle.root / "model", tmp_path / "bad" / "in", tmp_path / "bad" / "out"]
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env={}, timeout=60)
    assert proc.returncode == 2 and "for a size in 1..32" in proc.stderr, proc.stderr


def test_ranged_native_bundle_with_batch_and_length(tmp_path):
    """Batch and length both ranged: ``run_model`` takes each input's dimensions from NAME.shape
    (the byte count gives only their product) and answers as the Python runtime does; without the
    .shape file it says what to add (exit 2)."""
    shapes = {"input_ids": "1..2x1..32", "attention_mask": "1..2x1..32"}
    art = edgecompile.compile(EXAMPLE_ONNX, "native", tmp_path / "art", input_shapes=shapes,
                              buckets={"batch": [1, 2], "seq": [16, 32]})  # fmt: skip
    bundle = make_bundle(art, tmp_path / "bundle")
    data = np.load(CALIB)
    feeds = {k: np.ascontiguousarray(v[:2, 0, :20]) for k, v in data.items()}  # 2 x 20
    expected = edgecompile.load(art).run(feeds)
    io = tmp_path / "io"
    (io / "in").mkdir(parents=True)
    (io / "out").mkdir()
    for name, value in feeds.items():
        value.tofile(io / "in" / f"{name}.bin")
    cmd = [str(c) for c in (bundle.root / "run_model", bundle.root / "model", io / "in", io / "out")]
    missing = subprocess.run(cmd, capture_output=True, text=True, env={}, timeout=60)
    assert missing.returncode == 2 and "input_ids.shape" in missing.stderr, missing.stderr
    for name in feeds:
        (io / "in" / f"{name}.shape").write_text("2 20\n")
    proc = subprocess.run(cmd, capture_output=True, text=True, env={}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = np.fromfile(io / "out" / "last_hidden_state.bin", np.float32).reshape(2, 20, 64)
    np.testing.assert_array_equal(got, expected["last_hidden_state"])
