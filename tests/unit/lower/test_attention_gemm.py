"""Attention's Q.K^T over a ragged number of keys (a ViT's 197 or 257 tokens): the GEMM is padded to
whole tiles, and its last, partial column tile is split off (lower/schedules/cpu_matmul.py,
MIN_BATCH_SPLIT_N), so the other tiles write back whole vectors rather than lane by lane under a
per-lane guard. Checked on the lowered TIR for AVX2, AVX-512 and NEON tile widths, from Relax's
int64 shapes, and run against numpy where the host has the ISA."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from helpers import ISA_TARGETS, host_has, lowered
from tvm import te

from edgecompile.lower.schedules.cpu_matmul import Matmul
from edgecompile.lower.schedules.cpu_row_reduction import TIR_CONFIG


def _scores(heads: int, tokens: int, dim: int):
    """``q @ k * dim ** -0.5`` over ``[1, heads, tokens, dim] x [1, heads, dim, tokens]`` with
    int64 shapes, as Relax legalizes it."""

    def i64(*dims):
        return [tvm.tirx.IntImm("int64", d) for d in dims]

    q = te.placeholder(i64(1, heads, tokens, dim), "float32", name="q")
    k = te.placeholder(i64(1, heads, dim, tokens), "float32", name="k")
    r = te.reduce_axis((tvm.tirx.IntImm("int64", 0), tvm.tirx.IntImm("int64", dim)), name="r")
    mm = te.compute(i64(1, heads, tokens, tokens), lambda b, h, i, j: te.sum(q[b, h, i, r] * k[b, h, r, j], axis=r))
    scale = tvm.tirx.const(dim**-0.5, "float32")
    out = te.compute(mm.shape, lambda *i: mm(*i) * scale, name="T_multiply")
    return te.create_prim_func([q, k, out])


@pytest.mark.parametrize("target_name", list(ISA_TARGETS))
@pytest.mark.parametrize("tokens", [197, 257])
def test_ragged_keys_write_whole_vectors_but_the_last_tile(target_name, tokens):
    spec, flag = ISA_TARGETS[target_name]
    target = tvm.target.Target(spec)
    sch = Matmul().apply(_scores(6, tokens, 64), target, False)
    tir, lib = lowered(sch.mod["main"], target, TIR_CONFIG)
    stores = [line.split("=")[0] for line in tir.splitlines() if line.strip().startswith("T_multiply")]
    assert any(":" in s for s in stores), "no whole-vector store of the scores"
    assert any(":" not in s for s in stores), "no lane-by-lane store for the last, partial tile"
    if not host_has(flag):
        pytest.skip(f"scheduled and lowered for {target_name}; this host cannot run it")
    rng = np.random.default_rng(tokens)
    q = rng.standard_normal((1, 6, tokens, 64)).astype(np.float32)
    k = rng.standard_normal((1, 6, 64, tokens)).astype(np.float32)
    got = tvm.runtime.tensor(np.zeros((1, 6, tokens, tokens), np.float32))
    lib["main"](tvm.runtime.tensor(q), tvm.runtime.tensor(k), got)
    np.testing.assert_allclose(got.numpy(), (q @ k) * np.float32(0.125), rtol=1e-5, atol=1e-5)
