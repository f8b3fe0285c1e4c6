"""Helpers the tests share: paths of the bundled example, ONNX Runtime references, tolerances."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

EXAMPLE_ONNX = ROOT / "examples" / "tiny_bert.onnx"
EXAMPLE_INPUTS = ROOT / "examples" / "tiny_bert_inputs.npz"
EXAMPLE_SHAPES = {"input_ids": "1x32", "attention_mask": "1x32"}

# Compiled float outputs must match ONNX Runtime within this fraction of the output's range.
REL_TOL = 1e-4


def ort_run(path: Path, feeds: dict) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def zoo_case(zm, held: list[dict], calib: list[dict], tmp: Path) -> tuple[list[np.ndarray], Path]:
    """For a real-zoo model ``zm`` (``examples/real_zoo/models.py``) at reduced size: ORT fp32's
    outputs on the ``held`` feeds and the ``calib`` feeds stacked into ``tmp/calib.npz``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(zm.onnx), providers=["CPUExecutionProvider"])
    refs = [sess.run([zm.output], f)[0] for f in held]
    path = tmp / "calib.npz"
    np.savez(path, **{k: np.stack([c[k] for c in calib]) for k in calib[0]})
    return refs, path


def assert_close(ref: np.ndarray, got: np.ndarray, rel: float = REL_TOL) -> float:
    """Assert max |ref - got| <= rel * range(ref); returns the relative error."""
    assert ref.shape == got.shape, (ref.shape, got.shape)
    span = float(ref.max() - ref.min()) or 1.0
    err = float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))) / span
    assert err <= rel, f"max abs error {err * span:.3g} is {err:.3g} of the output range (limit {rel})"
    return err


def op_then_relu_model(path: Path, node, xshape, inits: list) -> Path:
    """Save an opset-17 ONNX model ``x -> node -> Relu -> z`` (``node`` writes ``y``; float input ``x``
    of ``xshape``, initializers ``inits``): the one-op graphs the pass tests compare with ORT."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [node, helper.make_node("Relu", ["y"], ["z"])],
        node.op_type.lower(),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(xshape))],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def digits_accuracy(artifact, data) -> float:
    """Top-1 of a compiled digits ViT on the 600 held-out images."""
    from digits_vit.digits import accuracy

    import edgecompile

    m = edgecompile.load(artifact)
    logits = np.concatenate([m.run({"pixel_values": x[None]})["logits"] for x in data["x_test"]])
    return accuracy(logits, data["y_test"])


# the only roles of float kernels in an integer-only artifact (inspect --float-ops)
BOUNDARY_ROLES = {"input quantize", "output dequantize"}


def float_ops(artifact) -> list[dict]:
    """``edgecompile inspect ARTIFACT --float-ops --json``: the kernels doing float arithmetic."""
    import json

    from typer.testing import CliRunner

    from edgecompile.cli import app

    r = CliRunner().invoke(app, ["inspect", str(artifact), "--float-ops", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


# Schedule tests' targets, each with the /proc/cpuinfo flag a host needs to run its code (None:
# lowered here, never run: aarch64).
ISA_TARGETS = {
    "avx2": ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"}, "avx2"),
    "avx512": ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake"}, "avx512f"),
    "neon": ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}, None),
}


def host_has(flag: str | None) -> bool:
    """Whether this host's CPU has ``flag`` (never for None)."""
    return flag is not None and flag in Path("/proc/cpuinfo").read_text()


def lowered(func, target, config: dict | None = None):
    """``(TIR after TVM's lowering, before code generation, as script; the built library)`` of a
    scheduled PrimFunc, built under the pass ``config``."""
    import tvm

    seen = {}

    @tvm.ir.instrument.pass_instrument
    class Grab:
        def run_after_pass(self, mod, info):
            if info.name == "tirx.StorageRewrite":
                seen["tir"] = mod["main"].script()

    with tvm.transform.PassContext(config=config or {}, instruments=[Grab()]):
        lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
    return seen["tir"], lib
