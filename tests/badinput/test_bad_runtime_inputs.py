"""Bad inputs at run time, through the Python API and the CLI: a clear error naming the input,
never a crash, an out-of-bounds read or a silently wrong answer (NaN policy: refused)."""

from __future__ import annotations

import numpy as np
import pytest
from badinput_support import VOCAB, cli, one_error_line

import edgecompile
from edgecompile.errors import InputMismatchError


def _with(name, value):
    return lambda f: {**f, name: value}


def _nan_at(index):
    def edit(f):
        x = f["x"].copy()
        x[index] = np.nan
        return {**f, "x": x}

    return edit


BAD_FEEDS = {
    "x NaN first": (_nan_at((0, 0, 0)), "holds nan at index \\[0, 0, 0\\]"),
    "x NaN last": (_nan_at((0, 3, 7)), "holds nan at index \\[0, 3, 7\\]"),
    "x +Inf": (_with("x", np.full((1, 4, 8), np.inf, np.float32)), "holds inf"),
    "x -Inf": (_with("x", np.full((1, 4, 8), -np.inf, np.float32)), "holds -inf"),
    "x float64": (_with("x", np.zeros((1, 4, 8))), "dtype float64, the model expects float32"),
    "x float16": (_with("x", np.zeros((1, 4, 8), np.float16)), "dtype float16"),
    "x int": (_with("x", np.zeros((1, 4, 8), np.int32)), "dtype int32"),
    "x bool": (_with("x", np.zeros((1, 4, 8), bool)), "dtype bool"),
    "x strings": (_with("x", np.array([["a"]])), "dtype <U1"),
    "x objects": (_with("x", np.array([None], dtype=object)), "dtype object"),
    "x a list": (_with("x", [[1.0]]), "dtype float64"),
    "x short": (_with("x", np.zeros((1, 4, 7), np.float32)), "shape 1x4x7, the model was compiled for 1x4x8"),
    "x extra dim": (_with("x", np.zeros((1, 1, 4, 8), np.float32)), "shape 1x1x4x8"),
    "x scalar": (_with("x", np.float32(1)), "has shape , the model"),
    "x empty": (_with("x", np.zeros((0, 4, 8), np.float32)), "shape 0x4x8"),
    "x transposed": (_with("x", np.zeros((8, 4, 1), np.float32)), "shape 8x4x1"),
    "ids at vocab": (_with("ids", np.array([[0, 0, 0, VOCAB]])), f"holds {VOCAB}, outside -{VOCAB}..{VOCAB - 1}"),
    "ids vocab+5000": (_with("ids", np.array([[0, VOCAB + 5000, 0, 0]])), "outside"),
    "ids 1e12": (_with("ids", np.array([[10**12, 0, 0, 0]])), "holds 1000000000000"),
    "ids -1e12": (_with("ids", np.array([[-(10**12), 0, 0, 0]])), "holds -1000000000000"),
    "ids below -vocab": (_with("ids", np.array([[-VOCAB - 1, 0, 0, 0]])), "outside"),
    "ids int32": (_with("ids", np.zeros((1, 4), np.int32)), "dtype int32, the model expects int64"),
    "ids uint64": (_with("ids", np.zeros((1, 4), np.uint64)), "dtype uint64"),
    "ids float": (_with("ids", np.zeros((1, 4), np.float32)), "dtype float32"),
    "ids longer": (_with("ids", np.zeros((1, 5), np.int64)), "shape 1x5"),
    "ids batch 2": (_with("ids", np.zeros((2, 4), np.int64)), "shape 2x4"),
    "missing x": (lambda f: {"ids": f["ids"]}, "missing input 'x'"),
    "missing all": (lambda f: {}, "missing input"),
    "unknown input": (_with("mask", np.ones((1, 4), np.int64)), "unknown input 'mask'"),
}


@pytest.fixture(scope="module")
def model(embed_artifact):
    return edgecompile.load(embed_artifact)


@pytest.mark.parametrize("case", sorted(BAD_FEEDS))
def test_bad_feed_is_refused_naming_the_input(model, embed_feeds, case):
    edit, msg = BAD_FEEDS[case]
    with pytest.raises(InputMismatchError, match=msg):
        model.run(edit(embed_feeds))


def test_negative_ids_in_range_index_from_the_end_like_onnx(model, embed_feeds):
    ids = embed_feeds["ids"]
    same = model.run({**embed_feeds, "ids": np.where(ids > 0, ids - VOCAB, ids)})["y"]
    np.testing.assert_allclose(same, model.run(embed_feeds)["y"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("runs", [0, -1])
def test_benchmark_runs_must_be_positive(model, runs):
    with pytest.raises(InputMismatchError, match="at least 1"):
        model.benchmark(runs=runs)


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--threads", "0"], "--threads must be at least 1"),
        (["--threads", "-2"], "--threads must be at least 1"),
        (["--input", "ids=a.npy", "--input", "ids=b.npy"], "given twice"),
        (["--input", "missing.npy"], "input file not found"),
        ([], "no inputs given"),
    ],
)
def test_run_usage_errors(embed_artifact, tmp_path, args, msg):
    for name in ("a.npy", "b.npy"):
        np.save(tmp_path / name, np.zeros((1, 4), np.int64))
    args = [a.replace("a.npy", str(tmp_path / "a.npy")).replace("b.npy", str(tmp_path / "b.npy")) for a in args]
    assert msg in one_error_line(cli("run", embed_artifact, *args))


@pytest.fixture
def feeds_npz(tmp_path, embed_feeds):
    path = tmp_path / "in.npz"
    np.savez(path, **embed_feeds)
    return path


@pytest.mark.parametrize(
    "make, msg",
    [
        (lambda t: t / "outdir", "is a directory"),
        (lambda t: t / "missing" / "out.npz", "does not exist"),
    ],
)
def test_run_output_path_errors(embed_artifact, feeds_npz, tmp_path, make, msg):
    (tmp_path / "outdir").mkdir()
    assert msg in one_error_line(cli("run", embed_artifact, "--input", feeds_npz, "--output", make(tmp_path)))


def test_run_output_without_suffix_says_the_file_it_wrote(embed_artifact, feeds_npz, tmp_path):
    r = cli("run", embed_artifact, "--input", feeds_npz, "--output", tmp_path / "result")
    assert r.exit_code == 0, r.output
    assert f"to {tmp_path / 'result.npz'}" in r.stdout and (tmp_path / "result.npz").is_file()


def test_npy_input_file_that_is_not_an_array(embed_artifact, tmp_path):
    bad = tmp_path / "x.npy"
    bad.write_text("not numpy")
    assert "cannot read" in one_error_line(cli("run", embed_artifact, "--input", f"x={bad}"))


def test_nan_input_file_is_refused_by_the_cli(embed_artifact, embed_feeds, tmp_path):
    x = embed_feeds["x"].copy()
    x[0, 1, 2] = np.nan
    path = tmp_path / "in.npz"
    np.savez(path, ids=embed_feeds["ids"], x=x)
    assert "holds nan at index [0, 1, 2]" in one_error_line(cli("run", embed_artifact, "--input", path))


@pytest.mark.parametrize("args", [["--runs", "0"], ["--warmup", "-1"], ["--threads", "0"]])
def test_bench_usage_errors(embed_artifact, args):
    one_error_line(cli("bench", embed_artifact, *args))
