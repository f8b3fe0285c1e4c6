"""The small runtime: runtime-only loading, input checks, artifact verification, determinism."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import EXAMPLE_ONNX, EXAMPLE_SHAPES, ROOT

import edgecompile
from edgecompile.errors import ArtifactError, InputMismatchError
from edgecompile.runtime.hostinfo import cpu_flags
from edgecompile.runtime.manifest import seal

RUNTIME_ONLY_SCRIPT = """
import json, os, sys
os.environ["TVM_USE_RUNTIME_LIB"] = "1"
import numpy as np
import edgecompile.runtime as rt
model = rt.load(sys.argv[1])
data = np.load(sys.argv[2])
out = model.run({k: data[k] for k in data.files}, threads=1)
np.savez(sys.argv[3], **out)
bench = model.benchmark(runs=3, threads=1)
prof = model.profile(repeats=2, runs=2, threads=1)
maps = open("/proc/self/maps").read()
print(json.dumps({
    "modules": sorted(sys.modules),
    "compiler_lib_mapped": "libtvm_compiler" in maps,
    "runtime_lib_mapped": "libtvm_runtime" in maps,
    "median_ms": bench.median_ms,
    "profiled": sorted(k.name for k in prof.kernels),
}))
"""


def test_runtime_only_mode_loads_no_compiler(example_artifact, example_feeds, tmp_path):
    out = tmp_path / "out.npz"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            RUNTIME_ONLY_SCRIPT,
            str(example_artifact),
            str(ROOT / "examples" / "tiny_bert_inputs.npz"),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    mods = info["modules"]
    for banned in (
        "torch",
        "onnx",
        "onnxruntime",
        "tvm.relax",
        "edgecompile.frontend",
        "edgecompile.lower",
        "edgecompile.api",
    ):
        assert not [m for m in mods if m == banned or m.startswith(banned + ".")], f"{banned} was imported"
    assert info["runtime_lib_mapped"] and not info["compiler_lib_mapped"]
    assert info["median_ms"] > 0
    kernels = json.loads((example_artifact / "manifest.json").read_text())["kernels"]
    assert info["profiled"] == sorted(k["name"] for k in kernels)  # the profiler works runtime-only
    # Bit-identical to a run in this (compiler-mode) process.
    ref = edgecompile.load(example_artifact).run(example_feeds)
    got = np.load(out)
    for k in ref:
        assert np.array_equal(ref[k], got[k])


def test_compiling_twice_gives_identical_bytes(example_artifact, tmp_path):
    """A second compile in another process (other hash seed, other directory) gives the same bytes."""
    script = (
        "import sys, edgecompile; edgecompile.compile(sys.argv[1], target='native', output=sys.argv[2], "
        "input_shapes={'input_ids': '1x32', 'attention_mask': '1x32'})"
    )
    env = {**os.environ, "PYTHONHASHSEED": "1234"}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(EXAMPLE_ONNX), str(tmp_path / "again")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    again = tmp_path / "again"
    names = sorted(p.name for p in example_artifact.iterdir())
    assert names == sorted(p.name for p in again.iterdir()) == ["manifest.json", "model.so", "weights.bin"]
    for n in names:
        assert (example_artifact / n).read_bytes() == (again / n).read_bytes(), n


def test_manifest_records_the_contract(example_artifact):
    m = json.loads((example_artifact / "manifest.json").read_text())
    assert m["format"] == "edgecompile-artifact" and m["format_version"] == 2
    assert m["tvm_version"].startswith("0.27") and m["edgecompile_version"]
    assert m["recipe"]["spec"] == "fp32" and m["target"]["name"] == "native"
    assert [i["name"] for i in m["inputs"]] == ["input_ids", "attention_mask"]
    assert m["inputs"][0] == {"name": "input_ids", "shape": [1, 32], "dtype": "int64", "valid_range": [-1000, 999]}
    assert m["inputs"][1] == {"name": "attention_mask", "shape": [1, 32], "dtype": "int64"}
    assert [o["name"] for o in m["outputs"]] == ["last_hidden_state", "pooled"]
    assert set(m["files"]) == {"model.so", "weights.bin"} and all(len(d) == 64 for d in m["files"].values())
    assert m["source"]["frontend"] == "onnx" and m["source"]["opset"] == 17


@pytest.mark.parametrize(
    "feeds_change,msg",
    [
        (lambda f: {**f, "token_type_ids": f["input_ids"]}, "unknown input 'token_type_ids'"),
        (lambda f: {"input_ids": f["input_ids"]}, "missing input 'attention_mask'"),
        (lambda f: {**f, "input_ids": f["input_ids"].astype(np.int32)}, "has dtype int32, the model expects int64"),
        (lambda f: {**f, "input_ids": np.zeros((1, 16), np.int64)}, "has shape 1x16, the model was compiled for 1x32"),
    ],
)
def test_wrong_inputs_are_refused(example_artifact, example_feeds, feeds_change, msg):
    with pytest.raises(InputMismatchError, match=msg):
        edgecompile.load(example_artifact).run(feeds_change(example_feeds))


@pytest.mark.parametrize("bad", [1000, -1001, 10**8])
def test_token_ids_outside_the_vocabulary_are_refused(example_artifact, example_feeds, bad):
    """TVM's gather does not bound-check (10**8 would crash the process); the runtime refuses."""
    ids = example_feeds["input_ids"].copy()
    ids[0, 3] = bad
    with pytest.raises(InputMismatchError, match=f"input 'input_ids' holds {bad}, outside -1000..999"):
        edgecompile.load(example_artifact).run({**example_feeds, "input_ids": ids})
    ids[0, 3] = -1000  # ONNX allows negative indices from the end
    edgecompile.load(example_artifact).run({**example_feeds, "input_ids": ids})


@pytest.fixture
def artifact_copy(example_artifact, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(example_artifact, dst)
    return dst


def test_tampered_library_is_refused(artifact_copy):
    lib = artifact_copy / "model.so"
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lib.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.so was modified or corrupted"):
        edgecompile.load(artifact_copy)


def test_missing_library_is_refused(artifact_copy):
    (artifact_copy / "model.so").unlink()
    with pytest.raises(ArtifactError, match="incomplete: model.so is missing"):
        edgecompile.load(artifact_copy)


def test_edited_manifest_is_refused(artifact_copy):
    path = artifact_copy / "manifest.json"
    m = json.loads(path.read_text())
    m["inputs"][0]["shape"] = [1, 64]
    path.write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="modified after compile"):
        edgecompile.load(artifact_copy)


def test_other_format_version_is_refused(artifact_copy):
    path = artifact_copy / "manifest.json"
    m = json.loads(path.read_text())
    m["format_version"] = 99
    path.write_bytes(seal(m))
    with pytest.raises(ArtifactError, match="format version 99 is not supported"):
        edgecompile.load(artifact_copy)


@pytest.mark.parametrize(
    "content,msg",
    [
        (None, "no manifest.json"),
        ("{not json", "corrupt manifest.json"),
        ('{"format": "other"}', "not an edgecompile manifest"),
    ],
)
def test_broken_manifest_is_refused(artifact_copy, content, msg):
    path = artifact_copy / "manifest.json"
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    with pytest.raises(ArtifactError, match=msg):
        edgecompile.load(artifact_copy)


def test_artifact_needing_missing_cpu_features_is_refused(tmp_path):
    art = edgecompile.compile(
        EXAMPLE_ONNX, target="x86_64-avx512", output=tmp_path / "avx512", input_shapes=EXAMPLE_SHAPES
    )
    needed = {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
    if needed <= cpu_flags():
        assert edgecompile.load(art).benchmark(runs=2).median_ms > 0
    else:
        with pytest.raises(ArtifactError, match="needs CPU features this machine lacks: .*avx512"):
            edgecompile.load(art)


def test_benchmark_statistics(example_artifact):
    r = edgecompile.load(example_artifact).benchmark(runs=9, threads=1, warmup=1)
    assert r.runs == 9 and r.threads == 1
    assert 0 < r.min_ms <= r.median_ms <= r.p90_ms


def test_loading_the_same_artifact_again_does_not_grow_memory(example_artifact, example_feeds):
    """TVM never unloads a library: each load of the same file mapped it again (~0.6 MB a load).
    The runtime now shares the module of identical (verified) library bytes; each load still gets
    its own VM, and two models loaded so give the same results independently."""

    def rss_mb() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

    first = edgecompile.load(example_artifact)
    before = rss_mb()
    for _ in range(30):
        edgecompile.load(example_artifact)
    grown = rss_mb() - before
    assert grown < 6, f"30 loads grew RSS by {grown:.1f} MB (before the fix: ~17 MB)"
    second = edgecompile.load(example_artifact)
    a, b = first.run(example_feeds), second.run(example_feeds)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_an_artifact_compiled_again_in_place_loads_its_new_kernels(example_feeds, tmp_path):
    """Compile, load, compile another model into the same directory, load again in the same
    process: the second load runs the new library (dlopen hands back the library already mapped
    under a path, so it used to run the new weights through the old kernels and crash on the
    argument count), and equals a fresh load of the same build elsewhere."""
    out = tmp_path / "art"
    first = edgecompile.load(edgecompile.compile(EXAMPLE_ONNX, output=out, input_shapes=EXAMPLE_SHAPES))
    want_first = first.run(example_feeds)
    short = {k: v[:, :16] for k, v in example_feeds.items()}
    shapes16 = {k: "1x16" for k in EXAMPLE_SHAPES}
    again = edgecompile.load(edgecompile.compile(EXAMPLE_ONNX, output=out, input_shapes=shapes16, force=True))
    elsewhere = edgecompile.load(edgecompile.compile(EXAMPLE_ONNX, output=tmp_path / "b", input_shapes=shapes16))
    got, want = again.run(short), elsewhere.run(short)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    for name, value in first.run(example_feeds).items():  # the first model still runs its own library
        np.testing.assert_array_equal(value, want_first[name])
