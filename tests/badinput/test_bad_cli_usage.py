"""Bad command lines: each one clear ``error:`` line and exit 2 (inspect's unsupported ops: exit 1),
before any long work starts."""

from __future__ import annotations

import numpy as np
import pytest
from badinput_support import cli, one_error_line
from helpers import EXAMPLE_ONNX

SHAPES = ["--input-shape", "input_ids=1x32"]
MASK = ["--input-shape", "attention_mask=1x32"]  # unless the case gives it

COMPILE_CASES = {
    "target misspelt": (["--target", "natvie"], "did you mean native?"),
    "target file missing": (["--target", "nowhere/profile.toml"], "nowhere/profile.toml"),
    "shape without =": (["--input-shape", "input_ids"], "malformed --input-shape"),
    "shape not numbers": (["--input-shape", "attention_mask=1xabc"], "malformed shape"),
    "shape negative": (["--input-shape", "attention_mask=1x-4"], "malformed shape"),
    "shape given twice": (["--input-shape", "input_ids=1x8", "--input-shape", "attention_mask=1x32"], "twice"),
    "shape for no input": (["--input-shape", "tokens=1x32"], "no input named 'tokens'"),
    "dtype unknown": (["--input-dtype", "input_ids=int3"], "int3"),
    "recipe unknown": (["--recipe", "int9"], "int9"),
    "recipe option unknown": (["--recipe", "int8:colour=red"], "colour"),
    "recipe option bad value": (["--recipe", "int8:percentile=lots"], "option percentile='lots' is not a number"),
    "recipe act unknown": (["--recipe", "int8:act=sometimes"], "act must be one of auto, static, dynamic"),
    "recipe out of order": (["--recipe", "int8+lowrank"], "lowrank must come before int8"),
    "recipe twice": (["--recipe", "int8+int8"], "int8"),
    "recipe with brackets": (["--recipe", "int8[[part]]"], "[[part]]"),
    "recipe file missing": (["--recipe", "missing_recipe.toml"], "missing_recipe"),
    "int8 without calib": (["--recipe", "int8"], "--calib"),
    "calib for fp32": (["--recipe", "fp32", "--calib", "c.npz"], "does not quantize"),
    "keep-float for fp32": (["--keep-float", "linear.0"], "does not quantize"),
    "sign key missing": (["--sign", "no_such_key"], "cannot read signing key"),
    "bf16 for a CPU without bf16 dot products": (
        ["--recipe", "bf16", "--target", "x86_64-avx2"],
        "needs a CPU with bf16 dot products",
    ),
    "bf16 for a GPU": (["--recipe", "bf16", "--target", "cuda-sm80"], "needs a CPU with bf16 dot products"),
    "bf16 with int8": (["--recipe", "bf16+int8"], "bf16 is a float recipe of its own"),
    "bf16 for Core ML": (["--recipe", "bf16", "--target", "coreml-ios17"], "use --recipe fp16"),
    "range malformed": (["--input-shape", "attention_mask=1x0..32"], "malformed range '0..32'"),
    "buckets for fixed shapes": (["--buckets", "seq=8,32"], "--buckets needs a ranged input shape"),
    "buckets malformed": (["--buckets", "seq=8,x"], "malformed sizes '8,x'"),
    "buckets without the range's end": (
        ["--input-shape", "attention_mask=1x1..32", "--buckets", "seq=8"],
        "must lie in 1..32 and include 32",
    ),
    "range on Core ML": (
        ["--input-shape", "attention_mask=1x1..32", "--target", "coreml-ios17"],
        "supported on CPU, CUDA and OpenCL targets; coreml-ios17 needs fixed shapes",
    ),
}


@pytest.mark.parametrize("case", sorted(COMPILE_CASES))
def test_compile_usage_error(tmp_path, case):
    args, msg = COMPILE_CASES[case]
    out = tmp_path / "out"
    line = one_error_line(
        cli("compile", EXAMPLE_ONNX, *SHAPES, *args, *MASK[: 0 if "attention_mask" in args[1] else 2], "-o", out)
    )
    assert msg in line, line
    assert not out.exists()


def _write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD_MODEL_FILES = {
    "missing": (lambda t: t / "none.onnx", "model file not found"),
    "a directory": (lambda t: t, "got a directory"),
    "empty": (lambda t: _write(t, "e.onnx", b""), "not an ONNX"),
    "text": (lambda t: _write(t, "t.onnx", b"hello, world\n" * 20), "not an ONNX"),
    "random bytes": (lambda t: _write(t, "r.onnx", np.random.default_rng(0).bytes(4096)), "not an ONNX"),
    "truncated": (lambda t: _write(t, "tr.onnx", EXAMPLE_ONNX.read_bytes()[:3000]), "not an ONNX"),
    "an npz": (lambda t: _write(t, "m.onnx", (EXAMPLE_ONNX.parent / "tiny_bert_inputs.npz").read_bytes()), "ONNX"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODEL_FILES))
def test_bad_model_file(tmp_path, case):
    make, msg = BAD_MODEL_FILES[case]
    assert msg in one_error_line(cli("compile", make(tmp_path), "-o", tmp_path / "out"))


@pytest.mark.parametrize(
    "args, msg",
    [
        (["inspect", "nowhere"], "not found"),
        (["run", "nowhere"], "artifact not found"),
        (["bench", "nowhere"], "artifact not found"),
        (["package", "nowhere", "-o", "b"], "artifact not found"),
        (["sign", "nowhere", "--key", "k"], "cannot read signing key"),
        (["report", EXAMPLE_ONNX], "report needs --eval, --output"),
        (["report", EXAMPLE_ONNX, "--eval", "e.npz", "-o", "r", "--latency-budget", "soon"], "--latency-budget"),
        (["run", EXAMPLE_ONNX], "got a file"),
    ],
)
def test_other_commands_usage_errors(args, msg):
    assert msg in one_error_line(cli(*args))


def test_keygen_never_overwrites(tmp_path):
    assert cli("keygen", tmp_path / "k").exit_code == 0
    before = (tmp_path / "k").read_bytes()
    assert "never overwrites" in one_error_line(cli("keygen", tmp_path / "k"))
    assert (tmp_path / "k").read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"not a key", None])
def test_bad_signing_key(tmp_path, content, embed_artifact):
    key = tmp_path / "k"
    if content is None:  # a public key where the private one is expected
        cli("keygen", tmp_path / "real")
        key = tmp_path / "real.pub"
    else:
        key.write_bytes(content)
    assert "key" in one_error_line(cli("sign", embed_artifact, "--key", key))


@pytest.mark.parametrize("content", [b"", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", None])
def test_bad_trusted_key(tmp_path, content, embed_artifact):
    key = tmp_path / "k.pub"
    if content is None:  # the private key where the public one is expected
        cli("keygen", tmp_path / "k")
        key = tmp_path / "k"
    else:
        key.write_bytes(content)
    assert "not an Ed25519 public key" in one_error_line(cli("bench", embed_artifact, "--trusted-key", key))
