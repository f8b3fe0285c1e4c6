"""The native runner `run_model` refuses bad inputs, a malformed io.txt, bad directories and a bad RUNS
with exit 2 and a message naming what is wrong (before the model runs), and otherwise gives the Python
runtime's outputs. One small model (an embedding Gather indexed by int64 ids, plus a float input) is
compiled and bundled once for the module."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import edgecompile
from edgecompile.artifact.bundle import io_spec, make_bundle

ROWS, SEQ, DIM = 50, 8, 16


def gather_model(path: Path) -> Path:
    """``h = table[ids] + x``, ``y = h @ w``: ``ids`` int64 [1, SEQ] (valid range -ROWS..ROWS-1),
    ``x`` float32 [1, SEQ, DIM]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    w = rng.normal(size=(DIM, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["e"]),
            helper.make_node("Add", ["e", "x"], ["h"]),
            helper.make_node("MatMul", ["h", "w"], ["y"]),
        ],
        "gather",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [1, SEQ]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, DIM]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQ, 4]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, SEQ, DIM]),
        ],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """The bundle, valid feeds, and the Python runtime's outputs for them."""
    tmp = tmp_path_factory.mktemp("runner")
    artifact = edgecompile.compile(gather_model(tmp / "gather.onnx"), target="native", output=tmp / "art")
    root = make_bundle(artifact, tmp / "bundle").root
    rng = np.random.default_rng(1)
    ids = rng.integers(-ROWS, ROWS, (1, SEQ)).astype(np.int64)
    ids[0, :2] = (-ROWS, ROWS - 1)  # the ends of the range are valid
    feeds = {"ids": ids, "x": rng.normal(size=(1, SEQ, DIM)).astype(np.float32)}
    expected = edgecompile.load(artifact).run(feeds)
    return SimpleNamespace(root=root, feeds=feeds, expected=expected)


@pytest.fixture
def work(bundle, tmp_path):
    """A copy of the bundle's model folder, the valid inputs written out, an empty output folder."""
    model = tmp_path / "model"
    shutil.copytree(bundle.root / "model", model)
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    for name, value in bundle.feeds.items():
        value.tofile(tmp_path / "in" / f"{name}.bin")
    return SimpleNamespace(model=model, inp=tmp_path / "in", out=tmp_path / "out", runs=[], tmp=tmp_path)


def run_model(bundle, w) -> subprocess.CompletedProcess:
    cmd = [str(bundle.root / "run_model"), str(w.model), str(w.inp), str(w.out), *w.runs]
    return subprocess.run(cmd, capture_output=True, text=True, env={}, timeout=120)


def set_input(w, name: str, index: tuple, value) -> None:
    arr = np.fromfile(w.inp / f"{name}.bin", dtype=np.int64 if name == "ids" else np.float32)
    arr = arr.reshape((1, SEQ) if name == "ids" else (1, SEQ, DIM))
    arr[index] = value
    arr.tofile(w.inp / f"{name}.bin")


def edit_bin(w, name: str, edit) -> None:
    path = w.inp / f"{name}.bin"
    path.write_bytes(edit(path.read_bytes()))


def set_io_line(w, number: int, line: str) -> None:
    lines = (w.model / "io.txt").read_text().splitlines()
    lines[number - 1] = line
    (w.model / "io.txt").write_text("\n".join(lines) + "\n")


def symlink_model(w) -> None:
    real = w.tmp / "elsewhere.so"
    (w.model / "model.so").rename(real)
    (w.model / "model.so").symlink_to(real)


def set_runs(w, runs: str) -> None:
    w.runs = [runs]


def io_line(w, kind: str) -> int:
    """The number of the first io.txt line of ``kind`` (``weights``, ``weight``)."""
    lines = (w.model / "io.txt").read_text().splitlines()
    return next(i + 1 for i, ln in enumerate(lines) if ln.split()[0] == kind)


def edit_weights_line(w, edit) -> None:
    n = io_line(w, "weights")
    _, file, size = (w.model / "io.txt").read_text().splitlines()[n - 1].split()
    set_io_line(w, n, edit(file, int(size)))


def edit_weight_line(w, edit) -> None:
    n = io_line(w, "weight")
    _, dtype, offset, *dims = (w.model / "io.txt").read_text().splitlines()[n - 1].split()
    set_io_line(w, n, edit(dtype, int(offset), dims))


def symlink_weights(w) -> None:
    real = w.tmp / "elsewhere.bin"
    (w.model / "weights.bin").rename(real)
    (w.model / "weights.bin").symlink_to(real)


def swap_weights_lines(w) -> None:
    lines = (w.model / "io.txt").read_text().splitlines()
    n = io_line(w, "weights") - 1
    lines[n], lines[n + 1] = lines[n + 1], lines[n]
    (w.model / "io.txt").write_text("\n".join(lines) + "\n")


REFUSED = {
    "ids-above-range": (lambda w: set_input(w, "ids", (0, 3), ROWS), f"input 'ids' holds {ROWS} at [0, 3], outside"),
    "ids-below-range": (lambda w: set_input(w, "ids", (0, 5), -ROWS - 1), f"holds {-ROWS - 1} at [0, 5]"),
    "ids-10**12": (lambda w: set_input(w, "ids", (0, 7), 10**12), "holds 1000000000000 at [0, 7]"),
    "x-nan": (lambda w: set_input(w, "x", (0, 2, 7), np.nan), "input 'x' holds nan at [0, 2, 7] (flat index 39)"),
    "x-inf": (lambda w: set_input(w, "x", (0, 0, 1), np.inf), "input 'x' holds inf at [0, 0, 1]"),
    "x-minus-inf": (lambda w: set_input(w, "x", (0, 7, 15), -np.inf), "input 'x' holds -inf at [0, 7, 15]"),
    "truncated-bin": (lambda w: edit_bin(w, "ids", lambda b: b[:-3]), "holds 61 bytes, the model expects 64"),
    "oversized-bin": (lambda w: edit_bin(w, "x", lambda b: b + b"\0"), "holds 513 bytes, the model expects 512"),
    "missing-bin": (lambda w: (w.inp / "x.bin").unlink(), "input 'x': cannot read"),
    "missing-out-dir": (lambda w: w.out.rmdir(), "does not exist"),
    "out-dir-is-a-file": (lambda w: (w.out.rmdir(), w.out.write_text("")), "is not a directory"),
    "io-name-slash": (lambda w: set_io_line(w, 1, "input a/b int64 1 8"), "malformed io.txt line 1: name 'a/b'"),
    "io-name-dotdot": (lambda w: set_io_line(w, 3, "output .. float32 1 8 4"), "malformed io.txt line 3: name '..'"),
    "io-unknown-dtype": (lambda w: set_io_line(w, 2, "input x float8 1 8 16"), "line 2: unknown dtype 'float8'"),
    "io-negative-dim": (lambda w: set_io_line(w, 2, "input x float32 1 -8 16"), "line 2: dimension '-8'"),
    "io-unknown-kind": (lambda w: set_io_line(w, 2, "tensor x float32 1 8 16"), "line 2: unknown kind 'tensor'"),
    "io-missing-fields": (lambda w: set_io_line(w, 4, "output h"), "malformed io.txt line 4: expected"),
    "io-bad-range": (lambda w: set_io_line(w, 1, "input ids int64 1 8 range 5"), "line 1: expected 'range LO HI'"),
    "io-range-on-float": (lambda w: set_io_line(w, 2, "input x float32 1 8 16 range 0 1"), "for integer inputs"),
    "symlinked-model-so": (symlink_model, "model.so is not a regular file"),
    "weights-missing": (lambda w: (w.model / "weights.bin").unlink(), "cannot read"),
    "weights-symlinked": (symlink_weights, "weights.bin is not a regular file"),
    "weights-truncated": (
        lambda w: (w.model / "weights.bin").write_bytes((w.model / "weights.bin").read_bytes()[:-64]),
        "bytes, io.txt says",
    ),
    "weights-name-dotdot": (lambda w: edit_weights_line(w, lambda f, n: f"weights .. {n}"), "expected 'weights FILE"),
    "weights-name-slash": (lambda w: edit_weights_line(w, lambda f, n: f"weights ../{f} {n}"), "expected 'weights"),
    "weights-size-negative": (lambda w: edit_weights_line(w, lambda f, n: f"weights {f} -1"), "expected 'weights"),
    "weight-before-weights": (swap_weights_lines, "a 'weight' line before the 'weights' line"),
    "weight-offset-unaligned": (
        lambda w: edit_weight_line(w, lambda t, o, d: " ".join(["weight", t, str(o + 4), *d])),
        "is not a non-negative multiple of 64",
    ),
    "weight-past-the-end": (
        lambda w: edit_weight_line(w, lambda t, o, d: " ".join(["weight", t, str(1 << 40), *d])),
        "lies outside the weights file",
    ),
    "weight-grown": (
        lambda w: edit_weight_line(w, lambda t, o, d: " ".join(["weight", t, str(o), "1000000", *d])),
        "lies outside the weights file",
    ),
    "weight-dtype-unknown": (
        lambda w: edit_weight_line(w, lambda t, o, d: " ".join(["weight", "float8", str(o), *d])),
        "unknown dtype 'float8'",
    ),
    "runs-abc": (lambda w: set_runs(w, "abc"), "RUNS 'abc' is not a non-negative integer; usage: run_model"),
    "runs-negative": (lambda w: set_runs(w, "-1"), "RUNS '-1' is not a non-negative integer"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_with_exit_2(bundle, work, case):
    change, message = REFUSED[case]
    change(work)
    proc = run_model(bundle, work)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert message in proc.stderr
    assert "\n" not in proc.stderr.strip()  # one line, no TVM backtrace
    assert not work.out.is_dir() or not any(work.out.iterdir())  # refused before running


def test_a_runtime_failure_exits_3_with_its_message(bundle, work):
    (work.model / "model.so").write_bytes(b"not an ELF library")
    proc = run_model(bundle, work)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert "error in TVM's runtime" in proc.stderr and "model.so" in proc.stderr


def test_io_txt_carries_the_valid_range_and_the_weights(bundle):
    lines = (bundle.root / "model" / "io.txt").read_text().splitlines()
    assert lines[:4] == [
        f"input ids int64 1 {SEQ} range {-ROWS} {ROWS - 1}",
        f"input x float32 1 {SEQ} {DIM}",
        f"output y float32 1 {SEQ} 4",
        f"output h float32 1 {SEQ} {DIM}",
    ]
    size = (bundle.root / "model" / "weights.bin").stat().st_size
    assert lines[4] == f"weights weights.bin {size}"
    weights = [ln.split() for ln in lines[5:]]
    assert weights and all(w[0] == "weight" and int(w[2]) % 64 == 0 for w in weights)
    # the embedding table, whole (ROWS x DIM float32), is one of them
    assert any(w[1] == "float32" and w[3:] == [str(ROWS), str(DIM)] for w in weights)


@pytest.mark.parametrize("io_txt", ["as-packaged", "without-range"])
def test_valid_run_matches_the_python_runtime(bundle, work, io_txt):
    if io_txt == "without-range":  # the format before ranges still runs
        set_io_line(work, 1, f"input ids int64 1 {SEQ}")
    set_runs(work, "2")
    proc = run_model(bundle, work)
    assert proc.returncode == 0, proc.stderr
    assert "median" in proc.stdout
    for name, ref in bundle.expected.items():
        got = np.fromfile(work.out / f"{name}.bin", dtype=ref.dtype).reshape(ref.shape)
        np.testing.assert_allclose(got, ref, rtol=1e-5)


@pytest.mark.parametrize(
    "name, file",
    [("a/b", "a_b"), ("..", "_.._"), ("", "__"), ("with space", "with_space"), ("tab\there", "tab_here"),
     ("caf\u00e9", "caf_"), ("/encoder/out", "_encoder_out")],
)  # fmt: skip
def test_names_that_cannot_be_file_names_get_plain_file_names(name, file):
    manifest = {
        "target": {"name": "native"},
        "inputs": [{"name": name, "dtype": "float32", "shape": [1]}, {"name": file, "dtype": "float32", "shape": [1]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}],
    }
    lines = io_spec(manifest).splitlines()
    assert lines[0] == f"input {file} float32 1" and lines[1] == f"input {file}_2 float32 1"
