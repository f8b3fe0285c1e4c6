"""Binary-hash attention: pattern matching on every exporter's form, the hash fit on real Q/K, the
packed kernels bit for bit against numpy, the gate, and the long-sequence digits ViT end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from tvm import relax
from typer.testing import CliRunner

import edgecompile
from edgecompile.cli import app
from edgecompile.errors import RecipeError
from edgecompile.hashattn.energy import block_energy
from edgecompile.hashattn.kernels import context_kernel, output_kernel, pack, reference
from edgecompile.hashattn.match import find_attention
from edgecompile.hashattn.options import HashOptions
from edgecompile.lower.build import compile_module
from edgecompile.targets import DEFAULT_ENERGY_PJ, get_profile

torch = pytest.importorskip("torch")


def _blocks(module, args, tmp_path, dynamo: bool, names):
    from models import export_onnx

    from edgecompile.frontend import import_model

    path = tmp_path / f"m_{dynamo}.onnx"
    export_onnx(module, args, path, names, ["out"] if len(names) else None, dynamo=dynamo)
    return find_attention(import_model(str(path), {}, None, None).mod["main"])


@pytest.mark.parametrize("dynamo", [False, True])
def test_finds_attention_in_every_exporters_form(tmp_path, dynamo):
    from models import BertStyleEncoder, EncoderStack

    # nn.MultiheadAttention (nn.TransformerEncoderLayer): 3-D [B*H, N, d] from TorchScript, SDPA from dynamo
    stack = _blocks(EncoderStack(hidden=32, layers=2, heads=4, ffn=64), (torch.randn(1, 24, 32),), tmp_path,
                    dynamo, ["x"])  # fmt: skip
    assert [b.name for b in stack] == ["attn.0", "attn.1"] and all(b.reason == "" for b in stack)
    assert all(b.seq == 24 and b.shape[-1] == 8 and b.mask is None for b in stack)
    # hand-written BERT attention with a key-padding mask [B, 1, 1, N]
    bert = BertStyleEncoder(vocab=100, hidden=32, layers=2, heads=4, ffn=64, max_pos=32)
    ids, mask = torch.randint(0, 100, (1, 16)), torch.ones(1, 16, dtype=torch.int64)
    found = _blocks(bert, (ids, mask), tmp_path, dynamo, ["input_ids", "attention_mask"])
    assert len(found) == 2 and all(b.reason == "" and b.mask is not None and b.seq == 16 for b in found)
    assert all(abs(b.scale - 1 / np.sqrt(8)) < 1e-6 for b in found) or dynamo  # dynamo scales Q and K instead


def test_a_causal_mask_keeps_softmax(tmp_path):
    class Causal(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x):
            m = torch.triu(torch.full((x.shape[1], x.shape[1]), float("-inf")), 1)
            return self.attn(x, x, x, attn_mask=m, need_weights=False)[0]

    (b,) = _blocks(Causal(), (torch.randn(1, 12, 32),), tmp_path, False, ["x"])
    assert "mask differs per query" in b.reason


@pytest.mark.parametrize("groups, n, bits, dv", [(3, 50, 16, 8), (2, 33, 31, 5), (1, 7, 1, 16)])
def test_packed_kernels_match_numpy_bit_for_bit(groups, n, bits, dv):
    rng = np.random.default_rng(n)
    v = rng.standard_normal((groups, n, dv)).astype(np.float32)
    cq, ck = pack(rng.random((groups, n, bits)) > 0.5), pack(rng.random((groups, n, bits)) > 0.5)
    keep = (rng.random((groups, n)) > 0.25).astype(np.int32)
    keep[:, 0] = 1
    c = float(bits + 1)
    bb = relax.BlockBuilder()
    ins = [relax.Var(x, relax.TensorType(s, t)) for x, s, t in
           (("cq", (groups, n), "int32"), ("ck", (groups, n), "int32"), ("keep", (groups, n), "int32"),
            ("v", (groups, n, dv), "float32"))]  # fmt: skip
    with bb.function("main", ins):
        with bb.dataflow():
            g1 = bb.add_func(context_kernel(groups, n, bits, dv, c), "ctx")
            g2 = bb.add_func(output_kernel(groups, n, bits, dv), "out")
            t = bb.emit(relax.call_tir(g1, ins[1:], [relax.TensorType((groups, bits + 1, dv), "float32"),
                                                     relax.TensorType((groups, bits + 1), "float32")]))  # fmt: skip
            o = bb.emit(relax.call_tir(g2, [ins[0], relax.TupleGetItem(t, 0), relax.TupleGetItem(t, 1)],
                                       relax.TensorType((groups, n, dv), "float32")))  # fmt: skip
            out = bb.emit_output(o)
        bb.emit_func_output(out)
    vm = relax.VirtualMachine(compile_module(bb.get(), get_profile("native").resolved()), tvm.cpu())
    got = vm["main"](*[tvm.runtime.tensor(x) for x in (cq, ck, keep, v)]).numpy()
    want = reference(cq, ck, keep, v, bits, c)
    assert np.array_equal(got, want)
    # and it is linear attention with weights h_i . h_j + c over the kept keys
    hq = ((cq[..., None] >> np.arange(bits)) & 1) * 2.0 - 1
    hk = ((ck[..., None] >> np.arange(bits)) & 1) * 2.0 - 1
    w = (np.einsum("gib,gjb->gij", hq, hk) + c) * keep[:, None, :]
    np.testing.assert_allclose(want, np.einsum("gij,gjd->gid", w, v) / w.sum(-1, keepdims=True), atol=2e-5)


@pytest.fixture(scope="module")
def long_digits(tmp_path_factory):
    """A long-sequence digits ViT (16x16 upsampled digits, one token per pixel: 257 tokens), trained
    here, exported, with 16 calibration images."""
    from digits_vit.digits import splits
    from digits_vit.long_seq import long_splits, train_long
    from models import export_onnx

    tmp = tmp_path_factory.mktemp("long")
    data = long_splits(splits(), size=16)
    model = train_long(data, epochs=8, size=16)
    onnx_path = tmp / "long_vit.onnx"
    export_onnx(model, (torch.from_numpy(data["x_test"][:1]),), onnx_path, ["pixel_values"], ["logits"], dynamo=False)
    calib = tmp / "calib.npz"
    np.savez(calib, pixel_values=data["x_calib"][:16, None])
    return data, onnx_path, calib, tmp, model


def _real_qk(model, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per encoder layer, the trained model's queries and keys ``[B, H, N, d]`` on images ``x``."""
    seen = []
    hooks = [layer.self_attn.register_forward_pre_hook(lambda mod, args: seen.append((mod, args[0])))
             for layer in model.encoder.layers]  # fmt: skip
    with torch.no_grad():
        model(torch.from_numpy(x))
        out = []
        for mod, y in seen:
            b, n, dim = y.shape
            heads = mod.num_heads
            q, k, _ = (y @ mod.in_proj_weight.T + mod.in_proj_bias).split(dim, -1)
            out.append(tuple(t.reshape(b, n, heads, -1).transpose(1, 2).numpy() for t in (q, k)))
    for h in hooks:
        h.remove()
    return out


def _recall(scores: np.ndarray, logits: np.ndarray, k: int) -> float:
    """Mean fraction of each query's ``k`` top keys by ``logits`` among its ``k`` top by ``scores``
    (ties broken at random)."""
    scores = scores + 1e-6 * np.random.default_rng(0).random(scores.shape)
    true, got = np.argsort(-logits, 1)[:, :k], np.argsort(-scores, 1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(true, got)]))


def test_hash_fit_ranks_keys_better_than_random_hyperplanes(long_digits):
    """On the trained long ViT's real Q/K (held-out images), the learned hash's weights
    ``exp(k_j . g) (h_i . h_j + c)`` find each query's top-10 keys far better than random sign
    projections with as many bits (5 seeds): in every head, and by 0.2 on average. (Not yet true:
    that its bits beat random bits on top of the same key bias in every head; printed.)"""
    from edgecompile.hashattn.fit import fit_head

    data, *_, model = long_digits
    fit_qk, test_qk = _real_qk(model, data["x_calib"][:8]), _real_qk(model, data["x_calib"][8:12])
    rng = np.random.default_rng(0)
    bits, topk, means = 16, 10, []
    for (qf, kf), (qt, kt) in zip(fit_qk, test_qk):
        d = qf.shape[-1]
        for h in range(qf.shape[1]):
            rows = [np.sort(rng.choice(qf.shape[2], 128, replace=False)) for _ in range(len(qf))]
            hh = fit_head([qf[s, h, r] for s, r in enumerate(rows)], [kf[s, h] for s in range(len(kf))],
                          [qf[s, h, r] @ kf[s, h].T / np.sqrt(d) for s, r in enumerate(rows)], [None] * len(qf),
                          bits=bits, topk=topk, iters=20, seed=h)  # fmt: skip
            fitted, rand, rand_biased = [], [], []
            for q, k in zip(qt[:, h], kt[:, h]):
                logits, log_e = q @ k.T / np.sqrt(d), np.log(hh.key_weights(k))[None, :]
                sim = (hh.codes(q, "q") * 2.0 - 1) @ (hh.codes(k, "k") * 2.0 - 1).T
                fitted.append(_recall(np.log(sim + 2 * bits) + log_e, logits, topk))
                for seed in range(5):
                    proj = np.random.default_rng(seed).standard_normal((d, bits))
                    rsim = np.sign(q @ proj) @ np.sign(k @ proj).T
                    rand.append(_recall(rsim, logits, topk))
                    rand_biased.append(_recall(np.log(rsim + 2 * bits) + log_e, logits, topk))
            print(f"head {h}: recall@{topk} fitted {np.mean(fitted):.3f}, random {np.mean(rand):.3f}, "
                  f"random + key bias {np.mean(rand_biased):.3f}")  # fmt: skip
            assert np.mean(fitted) > np.mean(rand)
            means.append((np.mean(fitted), np.mean(rand)))
    assert np.mean([f for f, _ in means]) > np.mean([r for _, r in means]) + 0.2


def _random_block_hash(heads: int, d: int, queries, bits: int = 16, anchors: int = 25):
    """A BlockHash with random (unfitted) hashes: the exact rows do not depend on them."""
    from edgecompile.hashattn.fit import HeadHash
    from edgecompile.hashattn.rewrite import BlockHash

    rng = np.random.default_rng(0)
    out = []
    for _ in range(heads):
        a = rng.standard_normal((anchors, d))
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        w_q, w_k = rng.standard_normal((2, bits, d + anchors))
        out.append(HeadHash(a, 1.0, np.zeros(d + anchors), np.zeros(d + anchors), w_q, w_k, rng.standard_normal(d)))
    return BlockHash(out, 2.0 * bits, 0.0, queries)


@pytest.mark.parametrize("queries", [(0,), (0, 5, 130)])
def test_global_query_rows_are_exact_softmax_attention(long_digits, queries):
    """The rewritten block's rows at its global queries are the original block's softmax attention
    rows on real images (class token alone: a prefix, concatenated; scattered positions: a gather),
    while the other rows are the hash's."""
    from edgecompile.calibrate.capture import with_outputs
    from edgecompile.frontend import import_model
    from edgecompile.hashattn.rewrite import emit_block
    from edgecompile.ir.walk import carry_functions, rebuild

    data, onnx_path, *_ = long_digits
    mod = import_model(str(onnx_path), {}, None, None).mod
    func = mod["main"]
    config = HashOptions(global_queries=len(queries))
    host = get_profile("native").resolved()
    for block in find_attention(func):
        g, n, d, _ = block.dims
        bh = _random_block_hash(g, d, queries)

        def emit(bb, binding, m, block=block, bh=bh):
            if binding.var.same_as(block.output):
                return bb.emit(emit_block(bb, block, bh, config, m), name_hint=binding.var.name)
            return None

        def vm(m):
            return relax.VirtualMachine(compile_module(carry_functions(m, mod), host), tvm.cpu())["main"]

        soft, hashed = vm(with_outputs(func, [block.output])), vm(rebuild(func, emit, outputs=[block.output]))
        for x in data["x_test"][:3]:
            a = soft(tvm.runtime.tensor(x[None]))[1].numpy().reshape(g, n, -1)
            b = hashed(tvm.runtime.tensor(x[None]))[1].numpy().reshape(g, n, -1)
            rows = list(queries)
            np.testing.assert_allclose(b[:, rows], a[:, rows], rtol=0, atol=1e-5)
            others = np.setdiff1d(np.arange(n), rows)
            assert np.abs(b[:, others] - a[:, others]).max() > 1e-3  # the rest really is the hash


def test_gate_converts_blocks_within_max_drop(long_digits):
    """With the class token's row exact (global_queries=1, the default), the gate converts at least
    one block of the trained 257-token ViT at max_drop 1%, and the converted model's top-1 on
    held-out test images stays within 1 point of softmax's. Without global queries and with every
    block converted the output moves (the class token's hashed row reaches the classifier);
    inspect says which blocks were converted and why not; int8 composes on top."""
    data, onnx_path, calib, tmp, _ = long_digits
    fp32 = edgecompile.compile(onnx_path, "native", tmp / "fp32")
    recipe = "hash-attention:min_seq=200,iters=20"
    gated = edgecompile.compile(onnx_path, "native", tmp / "gated", recipe=recipe, calib=calib)
    every = edgecompile.compile(onnx_path, "native", tmp / "all", recipe=f"{recipe},layers=all", calib=calib)
    bare = edgecompile.compile(onnx_path, "native", tmp / "bare", recipe=f"{recipe},layers=all,global_queries=0",
                               calib=calib)  # fmt: skip
    hg = json.loads((gated / "manifest.json").read_text())["hash_attention"]
    ha = json.loads((every / "manifest.json").read_text())["hash_attention"]
    hb = json.loads((bare / "manifest.json").read_text())["hash_attention"]
    assert [r["name"] for r in hg["layers"]] == ["attn.0", "attn.1"] and all(r["seq"] == 257 for r in hg["layers"])
    assert "global_queries=1" in hg["options"] and all(r["global_queries"] == [0] for r in hg["layers"])
    assert all(r["converted"] for r in ha["layers"]) and all(r["global_queries"] == [] for r in hb["layers"])
    assert hb["drop_no_gate"]["drop"] > 0.01
    converted = [r for r in hg["layers"] if r["converted"]]
    assert converted and hg["drop"]["drop"] <= 0.01
    for r in hg["layers"]:
        assert r["converted"] or "max_drop" in r["reason"]
        assert 0 < r["fidelity_relerr"] and r["energy_hash_uj"] < 0.3 * r["energy_softmax_uj"]
    x, y = data["x_test"][:200], data["y_test"][:200]
    run = lambda art: np.concatenate([edgecompile.load(art).run({"pixel_values": xi[None]})["logits"] for xi in x])  # noqa: E731
    top1 = {name: float((run(art).argmax(-1) == y).mean() * 100) for name, art in
            (("fp32", fp32), ("gated", gated), ("all", every), ("bare", bare))}  # fmt: skip
    print(f"top-1 on 200 test images: {top1}; converted {[r['name'] for r in converted]}")
    assert top1["gated"] >= top1["fp32"] - 1.0
    assert top1["bare"] < top1["fp32"] - 5.0  # without the exact class-token row the hash breaks the model
    assert np.abs(run(gated) - run(fp32)).max() > 1e-4  # really rewritten
    r = CliRunner().invoke(app, ["inspect", str(gated), "--hash"])
    assert r.exit_code == 0 and "attn.1" in r.output and "global_queries=1" in r.output
    assert "attention energy" in r.output
    both = edgecompile.compile(onnx_path, "native", tmp / "int8", recipe=f"{recipe},layers=all+int8", calib=calib)
    manifest = json.loads((both / "manifest.json").read_text())
    assert all(r["converted"] for r in manifest["hash_attention"]["layers"]) and manifest["quantization"]["layers"]
    np.testing.assert_allclose(run(both), run(every), atol=0.5 * np.abs(run(every)).max())  # int8 on top
    short = edgecompile.compile(onnx_path, "native", tmp / "short", recipe="hash-attention", calib=calib)
    rows = json.loads((short / "manifest.json").read_text())["hash_attention"]["layers"]
    assert all("sequence 257 < min_seq 512" in r["reason"] for r in rows)


def test_needs_attention_and_calibration(digits, tmp_path):
    _, onnx_path, calib, _ = digits
    with pytest.raises(RecipeError, match="calibration data"):
        edgecompile.compile(onnx_path, "native", tmp_path / "a", recipe="hash-attention")
    from models import export_onnx

    mlp = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
    export_onnx(mlp, (torch.randn(1, 8),), tmp_path / "mlp.onnx", ["x"], ["y"], dynamo=False)
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).standard_normal((4, 1, 8)).astype(np.float32))
    with pytest.raises(RecipeError, match="no softmax attention block"):
        edgecompile.compile(tmp_path / "mlp.onnx", "native", tmp_path / "b", recipe="hash-attention",
                            calib=tmp_path / "c.npz")  # fmt: skip


def test_energy_estimate_of_a_block():
    config = HashOptions.from_options({})
    for n in (512, 4096):
        soft, hashed = block_energy(6, n, 64, 64, config, DEFAULT_ENERGY_PJ)
        assert hashed < 0.3 * soft  # >= 70% less attention energy at equal length
    long, short = (block_energy(6, n, 64, 64, config, DEFAULT_ENERGY_PJ)[1] for n in (8192, 2048))
    assert long < 4.5 * short


def test_option_errors():
    for options, message in (({"bits": "40"}, "bits must be 1..31"), ({"anchors": "x"}, "malformed"),
                             ({"max_drop": "200%"}, "max_drop"),
                             ({"global_queries": "-1"}, "global_queries")):  # fmt: skip
        with pytest.raises(RecipeError, match=message):
            HashOptions.from_options(options)


def test_key_weights_ignore_the_keys_left_out():
    """The key bias's weights ``exp(k_j . g - max)`` take the max over the kept keys: a masked (or
    ranged-padding) key whose logit is 1000 above the rest once sent every kept weight to 0, and
    the weighted output to 0 / 0. The rewrite emits the same max (``hashattn.rewrite``)."""
    from edgecompile.hashattn.fit import HeadHash

    rng = np.random.default_rng(0)
    d = 4
    h = HeadHash(np.eye(d), 1.0, np.zeros(d), np.zeros(d), np.eye(d), np.eye(d), key_bias=np.ones(d) / d)
    k = rng.normal(size=(6, d))
    keep = np.array([1, 1, 1, 1, 0, 0])
    k[4] = 4000.0  # a left-out key with a huge logit
    w = h.key_weights(k, keep)
    s = k[:4] @ h.key_bias
    np.testing.assert_allclose(w[:4], np.exp(s - s.max()))
    assert w[4] == w[5] == 0 and w[:4].max() == 1.0
