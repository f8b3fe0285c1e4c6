"""Ranged artifacts built and run: one artifact serves every length in its range, fp32 close to
ONNX Runtime at each, integer-only padding that leaves the answer unchanged bit for bit, weights
stored once, and clear errors for what it cannot take."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import EXAMPLE_ONNX, assert_close, ort_run

import edgecompile
from edgecompile.errors import CalibrationError, EdgeCompileWarning, InputMismatchError, InputSpecError
from edgecompile.runtime import buckets

RANGE = {"input_ids": "1x1..32", "attention_mask": "1x1..32"}
CALIB = EXAMPLE_ONNX.parent / "tiny_bert_calib.npz"


def _feeds(length: int, seed: int = 0, pad_to: int | None = None) -> dict:
    rng = np.random.default_rng(seed)
    total = pad_to or length
    ids = np.zeros((1, total), np.int64)
    ids[0, :length] = rng.integers(1, 100, length)
    mask = np.zeros((1, total), np.int64)
    mask[0, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _varied_samples(n: int) -> list[dict]:
    """``n`` calibration samples of 8 to 32 tokens."""
    data = np.load(CALIB)
    return [{k: v[i][:, : 8 + 3 * (i % 9)] for k, v in data.items()} for i in range(n)]


@pytest.fixture(scope="module")
def fp32_ranged(tmp_path_factory):
    return edgecompile.compile(EXAMPLE_ONNX, "native", tmp_path_factory.mktemp("r") / "a", input_shapes=RANGE)


def test_every_length_matches_onnxruntime(fp32_ranged):
    """fp32 within 1e-5 of the output's range of ORT at lengths on and between the bucket sizes."""
    m = edgecompile.load(fp32_ranged)
    for length in (1, 3, 8, 13, 32):
        feeds = _feeds(length, seed=length)
        got, ref = m.run(feeds), ort_run(EXAMPLE_ONNX, feeds)
        assert got["last_hidden_state"].shape == (1, length, 64)
        for name in ("last_hidden_state", "pooled"):
            assert_close(ref[name], got[name], rel=1e-5)


def test_manifest_records_ranges_and_stores_weights_once(fp32_ranged, tmp_path):
    manifest = json.loads((fp32_ranged / "manifest.json").read_text())
    assert manifest["format_version"] == 3
    assert manifest["inputs"][0]["ranges"] == [None, [1, 32]]
    ranged = manifest["ranged"]
    assert ranged["groups"]["seq"] == {"range": [1, 32], "buckets": [2, 4, 8, 16, 32]}
    assert ranged["outputs"] == {"last_hidden_state": {"1": "seq"}}
    assert len(ranged["builds"]) == 5
    if shutil.which("strip"):  # each build's library without its DWARF sections (binutils is on every CI host)
        assert all(b".debug_info" not in (fp32_ranged / b["library"]).read_bytes() for b in ranged["builds"])
    static = edgecompile.compile(EXAMPLE_ONNX, "native", tmp_path / "s", input_shapes={k: "1x32" for k in RANGE})
    ratio = (fp32_ranged / "weights.bin").stat().st_size / (static / "weights.bin").stat().st_size
    assert ratio <= 1.1, ratio  # only the position-embedding slices differ between builds


def test_out_of_range_and_disagreeing_lengths_are_refused(fp32_ranged):
    m = edgecompile.load(fp32_ranged)
    with pytest.raises(InputMismatchError, match=r"input 'input_ids' has size 33 in dimension 1 .*1\.\.32"):
        m.run(_feeds(33))
    bad = {"input_ids": _feeds(8)["input_ids"], "attention_mask": _feeds(9)["attention_mask"]}
    with pytest.raises(InputMismatchError, match="disagree on 'seq'"):
        m.run(bad)
    with pytest.raises(InputMismatchError, match="takes 2 "):
        m.run({"input_ids": np.ones((1, 2, 8), np.int64), "attention_mask": np.ones((1, 2), np.int64)})


@pytest.mark.parametrize("recipe", ["int8-integer-only", "int8-integer-only:a16=linear.*"])
def test_integer_only_padding_is_bit_exact(tmp_path, recipe):
    """Calibrated on samples of several lengths; a length-8 input and the same input padded (mask
    zero) to 11 run on different builds (8 and 16) and give the same integers' answer bit for bit
    (with int16 activations too: their scale is per tensor, so padding rows change nothing)."""
    samples = _varied_samples(24)
    art = edgecompile.compile(
        EXAMPLE_ONNX, "native", tmp_path / "io", input_shapes=RANGE, recipe=recipe,
        calib=samples, buckets={"seq": [8, 16, 32]},
    )  # fmt: skip
    m = edgecompile.load(art)
    exact = m.run(_feeds(8, seed=5))
    padded = m.run(_feeds(8, seed=5, pad_to=11))
    np.testing.assert_array_equal(padded["last_hidden_state"][:, :8], exact["last_hidden_state"])
    np.testing.assert_array_equal(padded["pooled"], exact["pooled"])
    ref = ort_run(EXAMPLE_ONNX, _feeds(8, seed=5))["pooled"]
    cos = float((ref * exact["pooled"]).sum() / np.linalg.norm(ref) / np.linalg.norm(exact["pooled"]))
    assert cos > 0.95, cos


def test_int8_run_time_scales_leave_padding_bit_exact(tmp_path):
    """int8 with every matmul on run-time scales: V's scale per column spans only the keys some
    query reads, so the padded keys (mask 0) change nothing: the compile's padding check passes
    and a padded input gives the unpadded answer bit for bit."""
    samples = _varied_samples(16)
    art = edgecompile.compile(
        EXAMPLE_ONNX, "native", tmp_path / "dyn", input_shapes=RANGE, recipe="int8:act=dynamic",
        calib=samples, buckets={"seq": [8, 16, 32]},
    )  # fmt: skip
    manifest = json.loads((art / "manifest.json").read_text())
    assert any(name.startswith("matmul") for name in manifest["quantization"]["dynamic"])
    m = edgecompile.load(art)
    exact, padded = m.run(_feeds(8, seed=4)), m.run(_feeds(8, seed=4, pad_to=13))
    np.testing.assert_array_equal(padded["last_hidden_state"][:, :8], exact["last_hidden_state"])
    np.testing.assert_array_equal(padded["pooled"], exact["pooled"])


def test_calibration_leaves_the_padding_out(tmp_path):
    """Samples of 8 tokens padded into a 1..32 artifact: the thresholds equal a static 8-token
    artifact's calibrated on the same samples (the padded rows are cut from every statistic), not
    those of the same samples with padding rows observed; the compile warns that no sample reaches
    past 8 tokens."""
    data = np.load(CALIB)
    samples = [{k: v[i][:, :8] for k, v in data.items()} for i in range(12)]
    common = dict(recipe="int8:act=static,smooth=0", calib=samples)
    with pytest.warns(EdgeCompileWarning, match="calibration samples reach 8 of 'seq' .*up to 32"):
        ranged = edgecompile.compile(EXAMPLE_ONNX, "native", tmp_path / "r", input_shapes=RANGE,
                                     buckets={"seq": [8, 32]}, **common)  # fmt: skip
    static = edgecompile.compile(EXAMPLE_ONNX, "native", tmp_path / "s", input_shapes={k: "1x8" for k in RANGE},
                                 **common)  # fmt: skip
    padded_samples = [{k: buckets.pad_to(v, (1, 32)) for k, v in x.items()} for x in samples]
    padded = edgecompile.compile(EXAMPLE_ONNX, "native", tmp_path / "p", input_shapes={k: "1x32" for k in RANGE},
                                 recipe=common["recipe"], calib=padded_samples)  # fmt: skip

    def scales(art):
        layers = json.loads((art / "manifest.json").read_text())["quantization"]["layers"]
        return np.array([la["scale_out"] for la in layers if "scale_out" in la])

    np.testing.assert_allclose(scales(ranged), scales(static), rtol=1e-5)
    assert np.abs(scales(padded) / scales(static) - 1).max() > 0.01  # what observing the padding gives


def test_integer_only_equals_a_static_artifact_of_that_length(tmp_path):
    """The issue's bit-exactness: a ranged integer-only artifact and a static one of length 8, both
    calibrated on the same 8-token samples, give the same integers' answer bit for bit, on the
    8-token build and padded into the 32-token one (calibration leaves the padding out, and no
    Shiftmax constant depends on the row length)."""
    data = np.load(CALIB)
    samples = [{k: v[i][:, :8] for k, v in data.items()} for i in range(12)]
    ranged = edgecompile.compile(EXAMPLE_ONNX, "native", tmp_path / "r", input_shapes=RANGE, recipe="int8-integer-only",
                                 calib=samples, buckets={"seq": [8, 32]})  # fmt: skip
    static = edgecompile.compile(EXAMPLE_ONNX, "native", tmp_path / "s", input_shapes={k: "1x8" for k in RANGE},
                                 recipe="int8-integer-only", calib=samples)  # fmt: skip
    r, s = edgecompile.load(ranged), edgecompile.load(static)
    for seed in range(3):
        want = s.run(_feeds(8, seed=seed))
        for got in (r.run(_feeds(8, seed=seed)), r.run(_feeds(8, seed=seed, pad_to=20))):
            np.testing.assert_array_equal(got["last_hidden_state"][:, :8], want["last_hidden_state"])
            np.testing.assert_array_equal(got["pooled"], want["pooled"])


def test_lowrank_and_int8_replay_on_every_build(tmp_path):
    """lowrank's factors and int8's scales, planned once on the largest build, are the same weight
    tensors in every build (stored once), and padding stays bit-exact on the integer-only build."""
    samples = _varied_samples(24)
    art = edgecompile.compile(
        EXAMPLE_ONNX, "native", tmp_path / "lr", input_shapes=RANGE, calib=samples, buckets={"seq": [8, 16, 32]},
        recipe="lowrank:ratio=0.5,gate=off,multiple=8+int8-integer-only",
    )  # fmt: skip
    manifest = json.loads((art / "manifest.json").read_text())
    assert any(row["rank"] for row in manifest["lowrank"]["layers"])
    builds = manifest["ranged"]["builds"]
    only_top = set(builds[-1]["weights"]) - set(builds[0]["weights"])
    assert len(only_top) <= 2, only_top  # the position-embedding slice differs, the factors do not
    m = edgecompile.load(art)
    exact, padded = m.run(_feeds(16, seed=7)), m.run(_feeds(16, seed=7, pad_to=20))
    np.testing.assert_array_equal(padded["last_hidden_state"][:, :16], exact["last_hidden_state"])


def test_hash_attention_replays_on_every_build(tmp_path):
    """hash-attention learned once (on the largest build, the samples' padding cut away) converts
    the same blocks with the same hashes in every build: a length on a small build and padded
    into a large one gives the same answer, and both differ from softmax attention (hashed)."""
    samples = _varied_samples(16)
    art = edgecompile.compile(
        EXAMPLE_ONNX, "native", tmp_path / "h", input_shapes=RANGE, calib=samples, buckets={"seq": [8, 32]},
        recipe="hash-attention:layers=all,min_seq=1,bits=8,iters=20",
    )  # fmt: skip
    layers = json.loads((art / "manifest.json").read_text())["hash_attention"]["layers"]
    assert layers and all(row["converted"] for row in layers)
    m = edgecompile.load(art)
    exact, padded = m.run(_feeds(8, seed=2)), m.run(_feeds(8, seed=2, pad_to=20))
    assert_close(exact["last_hidden_state"], padded["last_hidden_state"][:, :8], rel=1e-5)
    for feeds, got in ((_feeds(8, seed=2), exact), (_feeds(20, seed=3), m.run(_feeds(20, seed=3)))):
        ref = ort_run(EXAMPLE_ONNX, feeds)["last_hidden_state"]
        moved = np.abs(got["last_hidden_state"] - ref).max() / (ref.max() - ref.min())
        assert 1e-4 < moved < 0.5, moved  # hashed on the 8 and the 32 build, still the model


def test_calibration_samples_out_of_range_are_refused(tmp_path):
    data = np.load(CALIB)
    sample = {k: np.concatenate([v[0], v[1]], axis=1) for k, v in data.items()}  # 64 tokens
    with pytest.raises(CalibrationError, match="calibration sample 0: input 'input_ids' has size 64"):
        edgecompile.compile(
            EXAMPLE_ONNX, "native", tmp_path / "c", input_shapes=RANGE, recipe="int8", calib=[sample]
        )
    assert not (tmp_path / "c").exists()


def _unmasked_attention(path):
    """x[1, seq, 8] -> softmax(x x^T) x: attends to every position, padding included."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["x", "xt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "unmasked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seq", 8])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_model_that_attends_to_its_padding_is_refused(tmp_path):
    model = _unmasked_attention(tmp_path / "u.onnx")
    with pytest.raises(InputSpecError, match="zero padding changes output 'y'"):
        edgecompile.compile(model, "native", tmp_path / "u", input_shapes={"x": "1x1..16x8"})
    assert not (tmp_path / "u").exists()
    fixed = edgecompile.compile(model, "native", tmp_path / "f", input_shapes={"x": "1x16x8"})  # fixed still fine
    assert fixed.exists()
    # a target this machine cannot run (a GPU) is checked on this CPU's float build of its graph
    with pytest.raises(InputSpecError, match="zero padding changes output 'y'"):
        edgecompile.compile(model, "cuda-sm80", tmp_path / "g", input_shapes={"x": "1x1..16x8"}, recipe="fp16")
    assert not (tmp_path / "g").exists()


def test_half_precision_recipes_build_every_length(tmp_path):
    """fp16 (and bf16, on CPUs with its dot product) need no calibration: each build is compiled as
    is; a length between builds stays close to ORT fp32 (half-precision tolerance)."""
    from edgecompile.runtime.hostinfo import cpu_flags

    recipes = ["fp16"] + (["bf16"] if "avx512_bf16" in cpu_flags() else [])  # bf16: this CPU lacks it otherwise
    feeds = _feeds(10, seed=3)
    ref = ort_run(EXAMPLE_ONNX, feeds)["pooled"]
    for rec in recipes:
        art = edgecompile.compile(EXAMPLE_ONNX, "native", tmp_path / rec, input_shapes=RANGE, recipe=rec,
                                  buckets={"seq": [8, 32]})  # fmt: skip
        assert_close(ref, edgecompile.load(art).run(feeds)["pooled"], rel=1e-2)
