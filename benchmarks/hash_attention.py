"""Binary-hash attention against softmax attention: latency scaling, short sequences, energy.

One ViT-style attention block (hidden 384, 6 heads of 64; Q, K, V given), batch 1, 1 thread:
our softmax attention (``softmax(Q K^T / 8) V`` through edgecompile's CPU pipeline), the same
block rewritten by the hash-attention pass (16 bits, 25 anchors; the hash's parameters are random
here: latency does not depend on them), and ONNX Runtime's fp32 MatMul-Softmax-MatMul in the same
process. Median of ``--runs`` calls after warm-up (3x as many for the hash block, timed first).
Energy: the pass's op-count estimate with the default 45 nm table.

    python benchmarks/hash_attention.py [--seqs 512,2048,4096,8192] [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TVM_NUM_THREADS", "1")
import numpy as np  # noqa: E402
from _common import host_profile, host_vm, median_ms, ort_session  # noqa: E402

HEADS, DIM, BITS, ANCHORS = 6, 64, 16, 25


def blocks(n: int):
    """(softmax module, hash module) over inputs q, k, v [HEADS, n, DIM]."""
    from tvm import relax

    from edgecompile.hashattn.fit import HeadHash
    from edgecompile.hashattn.match import find_attention
    from edgecompile.hashattn.options import HashOptions
    from edgecompile.hashattn.rewrite import BlockHash, rewrite_blocks

    bb = relax.BlockBuilder()
    ty = relax.TensorType((HEADS, n, DIM), "float32")
    q, k, v = relax.Var("q", ty), relax.Var("k", ty), relax.Var("v", ty)
    with bb.function("main", [q, k, v]):
        with bb.dataflow():
            kt = bb.emit(relax.op.permute_dims(k, [0, 2, 1]))
            s = bb.emit(relax.op.matmul(q, kt))
            s = bb.emit(relax.op.multiply(s, relax.const(np.float32(1 / 8))))
            p = bb.emit(relax.op.nn.softmax(s, axis=-1))
            o = bb.emit_output(bb.emit(relax.op.matmul(p, v)))
        bb.emit_func_output(o)
    soft = bb.get()
    rng = np.random.default_rng(0)

    def head() -> HeadHash:
        a = rng.standard_normal((ANCHORS, DIM))
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        w = lambda: rng.standard_normal((BITS, DIM + ANCHORS))  # noqa: E731  direction + RBF features
        return HeadHash(a, 1.0, np.zeros(DIM + ANCHORS), np.zeros(DIM + ANCHORS), w(), w())

    (block,) = find_attention(soft["main"])
    config = HashOptions(bits=BITS, anchors=ANCHORS)
    hashed = rewrite_blocks(soft["main"], [block], {block.name: BlockHash([head() for _ in range(HEADS)], 32.0, 0.0)},
                            config, switch=False)  # fmt: skip
    return soft, relax.transform.DeadCodeElimination()(hashed), block, config


def ort_attention(n: int):
    """ONNX Runtime (CPU, 1 thread) on softmax attention over q, k, v [HEADS, n, DIM]."""
    from onnx import TensorProto, helper

    shape = [HEADS, n, DIM]
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Mul", ["s", "c"], ["s2"]),
        helper.make_node("Softmax", ["s2"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["o"]),
    ]
    graph = helper.make_graph(
        nodes, "attn", [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape) for x in "qkv"],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, shape)],
        [helper.make_tensor("c", TensorProto.FLOAT, [], [1 / 8])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ort_session(model.SerializeToString(), threads=1)


def main() -> int:
    import tvm

    from edgecompile.hashattn.energy import block_energy
    from edgecompile.runtime import set_threads
    from edgecompile.targets import DEFAULT_ENERGY_PJ

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqs", default="512,2048,4096,8192")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    host = host_profile("native")
    rows = []
    for n in [int(x) for x in args.seqs.split(",")]:
        soft, hashed, block, config = blocks(n)
        rng = np.random.default_rng(1)
        feeds = [rng.standard_normal((HEADS, n, DIM)).astype(np.float32) for _ in range(3)]
        times = {}
        # the hash block first (and 3x the runs: it is cheap), before softmax's N^2 buffers churn memory
        for name, mod, runs in (("hash", hashed, 3 * args.runs), ("softmax", soft, args.runs)):
            vm = host_vm(mod, host)
            set_threads(1)
            args_ = [tvm.runtime.tensor(x) for x in feeds]
            times[name] = median_ms(lambda vm=vm, a=args_: vm["main"](*a), runs, warmup=1)
        sess = ort_attention(n)
        ort_feeds = dict(zip("qkv", feeds))
        times["ort"] = median_ms(lambda s=sess, f=ort_feeds: s.run(None, f), args.runs, warmup=1)
        e_soft, e_hash = block_energy(HEADS, n, DIM, DIM, config, DEFAULT_ENERGY_PJ)
        rows.append((n, times, e_soft, e_hash))
        print(f"N={n}: softmax {times['softmax']:.2f} ms, hash {times['hash']:.2f} ms, ORT {times['ort']:.2f} ms",
              flush=True)  # fmt: skip
    print("\n| tokens | softmax ms | hash ms | softmax / hash | ORT fp32 ms | ORT / hash | energy softmax uJ "
          "| energy hash uJ | energy saved |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for n, t, es, eh in rows:
        print(f"| {n} | {t['softmax']:.2f} | {t['hash']:.2f} | {t['softmax'] / t['hash']:.2f}x | {t['ort']:.2f} "
              f"| {t['ort'] / t['hash']:.2f}x | {es:.1f} | {eh:.1f} | {100 * (1 - eh / es):.1f}% |")  # fmt: skip
    by_n = {n: t for n, t, *_ in rows}
    if 2048 in by_n and 8192 in by_n:
        print(f"\n2048 -> 8192 tokens: softmax x{by_n[8192]['softmax'] / by_n[2048]['softmax']:.1f}, "
              f"hash x{by_n[8192]['hash'] / by_n[2048]['hash']:.2f} (goal <= 4.5)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
