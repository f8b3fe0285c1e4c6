"""A stride-1 window op's padded input is a stage of its own kernel, computed one channel at a time
inside the op's channel loop (lower/schedules/window_stage.py): its buffer is one padded channel,
its interior is copied in vectors (no scalar loop for the column check), and the kernel computes
numpy's depthwise convolution, on the AVX2, AVX-512 and NEON vector widths (run where the host
has the ISA). An output that mixes channels and rows keeps the stage as a loop nest of its own."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from helpers import ISA_TARGETS, host_has, lowered
from tvm import te

from edgecompile.lower.schedules.cpu_elementwise import Elementwise
from edgecompile.passes.padding import padded_stage


def _kernel(c: int, h: int, w: int, pads: list[int], out: str):
    """A 3x3 depthwise convolution over ``[1, c, h, w]`` padded by ``pads``, plus a bias-free SiLU,
    written ``out``: "nchw", "flat" (``[c, h * w]``: a reshape into the next GEMM) or "rows"
    (``[c * ho, wo]``: channels and rows merged)."""
    x = te.placeholder((1, c, h, w), "float32", name="x")
    k = te.placeholder((c, 1, 3, 3), "float32", name="k")
    ho, wo = h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2
    xp = padded_stage(x, pads)  # what passes/window_taps.py's taps read for a stride-1 window

    def taps(b, ch, yy, xx):
        return sum(xp[b, ch, yy + dy, xx + dx] * k[ch, 0, dy, dx] for dy in range(3) for dx in range(3))

    y = te.compute((1, c, ho, wo), taps, name="depthwise")
    s = te.compute(y.shape, lambda *i: y(*i) / (1.0 + te.exp(-y(*i))), name="silu")
    if out == "flat":
        s = te.compute((c, ho * wo), lambda ch, i: s[0, ch, i // wo, i % wo], name="flat")
    elif out == "rows":
        s = te.compute((c * ho, wo), lambda r, i: s[0, r // ho, r % ho, i], name="rows")
    return te.create_prim_func([x, k, s]), (ho, wo)


def _reference(x, k, pads):
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    ho, wo = xp.shape[2] - 2, xp.shape[3] - 2
    taps = [(dy, dx) for dy in range(3) for dx in range(3)]
    y = sum(xp[:, :, dy : dy + ho, dx : dx + wo] * k[None, :, 0, dy, dx, None, None] for dy, dx in taps)
    return y / (1 + np.exp(-y))


@pytest.mark.parametrize("target_name", list(ISA_TARGETS))
@pytest.mark.parametrize(
    "c,h,w,pads,out",
    [(6, 28, 28, [1, 1, 1, 1], "nchw"), (5, 20, 37, [1, 2, 1, 0], "flat"), (4, 17, 64, [1, 1, 1, 1], "flat")],
)
def test_the_padded_stage_is_one_channel_in_the_channel_loop(target_name, c, h, w, pads, out):
    spec, flag = ISA_TARGETS[target_name]
    target = tvm.target.Target(spec)
    func, (ho, wo) = _kernel(c, h, w, pads, out)
    sch = Elementwise().apply(func, target, False)
    tir, lib = lowered(sch.mod["main"], target)
    hp, wp = h + pads[0] + pads[2], w + pads[1] + pads[3]
    assert f"window_stage = T.alloc_buffer(({hp * wp},)" in tir, tir[:3000]  # one padded channel
    assert any(line.strip().startswith("window_stage[") and ":" in line.split("=")[0] for line in tir.splitlines()), (
        "the stage's interior is not stored in vectors"
    )
    if not host_has(flag):
        pytest.skip(f"scheduled and lowered for {target_name}; this host cannot run it")
    rng = np.random.default_rng(c)
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    k = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    got = tvm.runtime.tensor(np.zeros((c, ho * wo) if out == "flat" else (1, c, ho, wo), np.float32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(k), got)
    ref = _reference(x, k, pads).reshape(got.shape)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_an_output_mixing_channels_and_rows_keeps_the_stage_apart():
    """Rows of the output that span channels (``[c * ho, wo]``) cannot take one channel's stage
    per iteration: the stage is a loop nest of its own (the whole padded tensor), still vectorized,
    and the kernel still computes the convolution."""
    target = tvm.target.Target(ISA_TARGETS["avx2"][0])
    c, h, w, pads = 3, 12, 16, [1, 1, 1, 1]
    func, (ho, wo) = _kernel(c, h, w, pads, "rows")
    tir, lib = lowered(Elementwise().apply(func, target, False).mod["main"], target)
    assert f"window_stage = T.alloc_buffer(({c * (h + 2) * (w + 2)},)" in tir, tir[:3000]
    if not host_has("avx2"):
        pytest.skip("scheduled and lowered for AVX2; this host cannot run it")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    k = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    got = tvm.runtime.tensor(np.zeros((c * ho, wo), np.float32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(k), got)
    np.testing.assert_allclose(got.numpy(), _reference(x, k, pads).reshape(c * ho, wo), rtol=1e-5, atol=1e-5)
