"""Weights in their own memory-mapped file (issue 25): the library holds no weights, the runtimes
hand the VM views of the mapping (no copy), outputs are bit-identical to a build that keeps its
weights in the library, and a model's peak memory is its weights once plus the planned arena."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import EXAMPLE_ONNX, EXAMPLE_SHAPES, ROOT

import edgecompile
from edgecompile.runtime.weights import map_weights

CALIB = ROOT / "examples" / "tiny_bert_calib.npz"
MB = 1e6


def test_the_library_holds_no_weights(example_artifact):
    m = json.loads((example_artifact / "manifest.json").read_text())
    section = m["weights"]
    blob = example_artifact / section["file"]
    assert section["file"] in m["files"] and blob.stat().st_size == section["bytes"]
    assert m["memory"]["weights_bytes"] == section["bytes"] and m["memory"]["arena_bytes"] > 0
    library = (example_artifact / m["library"]).read_bytes()
    views = map_weights(example_artifact, section)
    assert len(views) == len(section["tensors"]) > 10
    for view in sorted(views, key=lambda v: -v.nbytes)[:5]:  # the largest weights: not in model.so
        assert view.tobytes()[:256] not in library


def _maps_of(path: Path) -> list[tuple[int, int]]:
    spans = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path.resolve())):
            lo, hi = line.split()[0].split("-")
            spans.append((int(lo, 16), int(hi, 16)))
    return spans


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
def test_the_vm_gets_views_of_the_mapped_file(example_artifact):
    model = edgecompile.load(example_artifact)
    spans = _maps_of(example_artifact / "weights.bin")
    assert spans, "weights.bin is not memory-mapped"
    assert model._weights
    for tensor in model._weights:
        start = np.from_dlpack(tensor).ctypes.data
        assert any(lo <= start < hi for lo, hi in spans), "a weight was copied out of the mapping"


@pytest.mark.parametrize("recipe", ["fp32", "int8-integer-only"])
def test_outputs_are_bit_identical_to_weights_in_the_library(recipe, example_feeds, tmp_path):
    """The same module built the old way (constants inside the library, no weights file) and
    through ``compile`` (weights mapped from weights.bin): the same bits."""
    from edgecompile.ir.host import HostFunction
    from edgecompile.lower.build import compile_module
    from edgecompile.targets import get_profile

    calib = CALIB if recipe != "fp32" else None
    art = edgecompile.compile(
        EXAMPLE_ONNX, output=tmp_path / "art", input_shapes=EXAMPLE_SHAPES, recipe=recipe, calib=calib
    )
    mod, _ = edgecompile.api.apply_recipe(EXAMPLE_ONNX, recipe, calib, input_shapes=EXAMPLE_SHAPES)
    profile = get_profile("native").resolved()
    model = edgecompile.load(art)
    embedded = HostFunction(mod, lambda m: compile_module(m, profile), [i["name"] for i in model.inputs])
    got = model.run(example_feeds)
    for (name, value), ref in zip(got.items(), embedded(example_feeds)):
        assert np.array_equal(value, ref), name


# --- a model whose weights dominate its memory: 3 x 2048 x 2048 float32 (50 MB) ----------------

WIDTH, LAYERS, ROWS = 2048, 3, 8


def wide_mlp(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(LAYERS):
        w = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]))
        x = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, WIDTH])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [ROWS, WIDTH])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wide")
    art = edgecompile.compile(wide_mlp(tmp / "wide.onnx"), target="native", output=tmp / "art")
    x = np.random.default_rng(1).standard_normal((ROWS, WIDTH)).astype(np.float32)
    np.savez(tmp / "x.npz", x=x)
    return art, tmp


PYTHON_RUNTIME = """
import json, os, sys
os.environ["TVM_USE_RUNTIME_LIB"] = "1"
import numpy as np
import edgecompile.runtime as rt
from edgecompile.runtime.memory import current_rss, peak_rss
from edgecompile.runtime.model import import_tvm_runtime
import_tvm_runtime()
x = np.load(sys.argv[2])["x"]
before = current_rss()
model = rt.load(sys.argv[1])
loaded = current_rss()
model.run({"x": x}, threads=1)
print(json.dumps({"before": before, "loaded": loaded, "peak": peak_rss(), "after_run": current_rss()}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS and VmHWM (Linux)")
def test_python_runtime_holds_the_weights_once(wide):
    art, tmp = wide
    mem = json.loads((art / "manifest.json").read_text())["memory"]
    weights = mem["weights_bytes"]
    assert weights >= LAYERS * WIDTH * WIDTH * 4
    proc = subprocess.run(
        [sys.executable, "-c", PYTHON_RUNTIME, str(art), str(tmp / "x.npz")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rss = json.loads(proc.stdout.strip().splitlines()[-1])
    # loading maps the file: nothing resident yet (the weights used to be deserialized here, 1x-2x)
    assert rss["loaded"] - rss["before"] < 0.2 * weights, rss
    # running touches every weight once: the growth is the weights, the arena and a little code
    growth = rss["peak"] - rss["before"]
    assert growth <= weights + mem["arena_bytes"] + 15 * MB, (growth / MB, weights / MB)


def test_native_runner_peak_is_weights_plus_arena(wide):
    """Issue 25's figure: the native runner's peak RSS <= weights + arena + 15 MB (TVM and code)."""
    from edgecompile.artifact.bundle import make_bundle

    art, tmp = wide
    bundle = make_bundle(art, tmp / "bundle")
    (tmp / "in").mkdir(exist_ok=True)
    (tmp / "out").mkdir(exist_ok=True)
    np.load(tmp / "x.npz")["x"].tofile(tmp / "in" / "x.bin")
    cmd = [str(bundle.root / "run_model"), str(bundle.root / "model"), str(tmp / "in"), str(tmp / "out"), "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={"TVM_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # the runner's own VmHWM: a child's ru_maxrss would count this (large) process's pages before exec
    peak = int(re.search(r"peak rss (\d+) KiB", proc.stdout).group(1)) * 1024
    assert "load " in proc.stdout
    mem = bundle.memory
    assert peak <= mem["weights_bytes"] + mem["arena_bytes"] + 15 * MB, (peak / MB, mem)
    assert peak <= bundle.expected_resident
    ref = edgecompile.load(art).run({"x": np.load(tmp / "x.npz")["x"]})
    got = np.fromfile(tmp / "out" / f"{next(iter(ref))}.bin", np.float32).reshape(ROWS, WIDTH)
    assert np.array_equal(got, next(iter(ref.values())))
