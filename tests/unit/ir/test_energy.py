"""The energy estimate: op counts of a hand-built Relax function checked by hand, and the counts
of compiled artifacts (int8 cheaper than fp32 per multiply-add) shown by ``inspect``."""

from __future__ import annotations

import json

import numpy as np
from tvm import relax
from typer.testing import CliRunner

import edgecompile
from edgecompile.cli import app
from edgecompile.ir.energy import count_ops, estimate
from edgecompile.targets import DEFAULT_ENERGY_PJ


def _func(dtype: str, acc: str) -> relax.Function:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 8), dtype))
    w = relax.const(np.ones((8, 16), dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, w, out_dtype=acc))  # 4*16 outputs, 8 multiply-adds each
            r = bb.emit(relax.op.reshape(y, (64,)))  # a view: free
            z = bb.emit(relax.op.add(r, r))  # 64 adds
            e = bb.emit(relax.op.exp(relax.op.astype(z, "float32")))  # cast: 64 adds; exp: 4 mul + 4 add each
            t = bb.emit(relax.op.permute_dims(relax.const(np.ones((2, 3), "float32"))))  # constants only: folded
            out = bb.emit_output(relax.Tuple([e, t]))
        bb.emit_func_output(out)
    return bb.get()["main"]


def test_counts_by_hand():
    c = count_ops(_func("float32", "float32"))
    assert c["fp32_mul"] == 512 + 4 * 64 and c["fp32_add"] == 512 + 64 + 64 + 4 * 64
    assert set(c) == {"fp32_mul", "fp32_add", "mem_words"}
    # words: matmul reads 32 + 128, writes 64; add reads 2 x 64, writes 64; astype 64 + 64; exp 64 + 64
    assert c["mem_words"] == (32 + 128 + 64) + 3 * 64 + 2 * 64 + 2 * 64
    q = count_ops(_func("int8", "int32"))
    assert q["int8_mul"] == 512 and q["int32_add"] == 512 + 64 and q["fp32_add"] == 64 + 4 * 64
    assert q["mem_words"] == (32 + 128) / 4 + 64 + 3 * 64 + 2 * 64 + 2 * 64
    e, eq = estimate(c, DEFAULT_ENERGY_PJ), estimate(q, DEFAULT_ENERGY_PJ)
    assert e["compute_uj"] == round((c["fp32_mul"] * 3.7 + c["fp32_add"] * 0.9) * 1e-6, 4)
    assert eq["total_uj"] < e["total_uj"]


def test_artifacts_carry_the_estimate_and_inspect_prints_it(digits, tmp_path):
    _, onnx_path, calib, _ = digits
    fp32 = edgecompile.compile(onnx_path, "native", tmp_path / "fp32")
    int8 = edgecompile.compile(onnx_path, "native", tmp_path / "int8", recipe="int8", calib=calib)
    ef, eq = (json.loads((a / "manifest.json").read_text())["energy"] for a in (fp32, int8))
    assert ef["counts"]["fp32_mul"] > 0 and "int8_mul" not in ef["counts"]
    assert eq["counts"]["int8_mul"] > 0.9 * ef["counts"]["fp32_mul"] - eq["counts"].get("fp32_mul", 0)
    assert eq["compute_uj"] < ef["compute_uj"]
    r = CliRunner().invoke(app, ["inspect", str(int8)])
    assert r.exit_code == 0 and f"energy estimate {eq['total_uj']:.4g} uJ per run" in r.output
