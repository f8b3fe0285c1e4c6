"""The graph emission of binary-hash attention: each chosen block's ``P V`` becomes, per block,
``x / |x|`` -> anchors matmul -> ``exp`` -> centre -> projection -> ``sign`` bits packed into an int32
word per token (:func:`_codes`), then the packed kernels of :mod:`edgecompile.hashattn.kernels`
(additions only on the codes), with the key bias's weights where fitted, and the ``global_queries``
rows recomputed with exact softmax attention (:func:`_with_exact_rows`). With a switch
(:mod:`edgecompile.ir.switch`), each block computes both ways and an extra int32 input picks per
block (the gate measures every candidate set on one build)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from edgecompile.hashattn.fit import HeadHash
from edgecompile.hashattn.kernels import context_kernel, output_kernel
from edgecompile.hashattn.match import AttentionBlock
from edgecompile.hashattn.options import HashOptions
from edgecompile.ir.attrs import OPS_ATTR
from edgecompile.ir.switch import choose, switch_var
from edgecompile.ir.walk import rebuild

op = relax.op


@dataclass
class BlockHash:
    """What the rewrite bakes into one block: a hash per group (head), the constant c and the query
    positions computed exactly (None: the first ``global_queries`` of the options)."""

    heads: list[HeadHash]
    c: float
    fidelity: float  # relative error of the block output on held-out calibration samples (exact rows included)
    queries: tuple[int, ...] | None = None  # sorted query positions with exact softmax rows


def rewrite_blocks(
    func, blocks: list[AttentionBlock], hashes: dict, options: HashOptions, switch: bool
) -> tvm.IRModule:
    """``func`` with ``blocks`` on the hash path; with ``switch``, each block computes both ways and
    the switch input (:data:`edgecompile.ir.switch.SWITCH_INPUT`) picks (1: hash) per block, in
    ``blocks`` order."""
    by_output = {b.output: (k, b) for k, b in enumerate(blocks)}
    flags = switch_var(len(blocks)) if switch else None

    def emit(bb, binding, m):
        hit = by_output.get(binding.var)
        if hit is None:
            return None
        k, b = hit
        hashed = emit_block(bb, b, hashes[b.name], options, m)
        if not switch:
            return bb.emit(hashed, name_hint=binding.var.name)
        soft = bb.emit(relax.Call(binding.value.op, [m.get(a, a) for a in binding.value.args], binding.value.attrs))
        return bb.emit(choose(flags, k, hashed, soft), name_hint=binding.var.name)

    return rebuild(func, emit, extra_params=[flags] if switch else None)


def emit_block(bb, b: AttentionBlock, bh: BlockHash, options: HashOptions, m: dict) -> relax.Expr:
    """The hashed output of block ``b`` (its ``P V``'s shape), emitted into ``bb``; ``m`` maps the
    function's vars to the ones emitted so far."""
    g, n, d, dv = b.dims
    bits = options.bits
    q = op.reshape(m.get(b.q, b.q), [g, n, d])
    kt = m.get(b.kt, b.kt) if isinstance(b.kt, relax.Var) else b.kt
    k = op.reshape(op.permute_dims(kt, [*range(len(b.shape) - 2), len(b.shape) - 1, len(b.shape) - 2]), [g, n, d])
    v = op.reshape(m.get(b.v, b.v), [g, n, dv])
    codes_q = bb.emit(_codes(q, bh, "q", bits))
    codes_k = bb.emit(_codes(k, bh, "k", bits))
    keep = bb.emit(_keep(b, m))
    weighted = bh.heads[0].key_bias is not None
    if weighted:  # values [e_j v_j, e_j], e_j = exp(k_j . g - max): the output is their ratio
        v = _key_weighted(bb, k, v, bh, keep)
    width = dv + 1 if weighted else dv
    out = _linear_attention(bb, codes_q, codes_k, keep, v, bh.c, (g, n, bits, width))
    if weighted:
        out = op.divide(op.strided_slice(out, axes=[2], begin=[0], end=[dv]),
                        op.strided_slice(out, axes=[2], begin=[dv], end=[width]))  # fmt: skip
    queries = _queries(bh, options, n)
    if queries:
        out = _with_exact_rows(bb, bb.emit(out), b, queries, m)
    return op.reshape(out, [int(x) for x in b.output.ty.shape.values])


def _keep(b: AttentionBlock, m: dict) -> relax.Expr:
    """The kept keys ``[G, N]`` int32: all, or those the additive mask leaves (``mask > log 0.5``)."""
    g, n, _, _ = b.dims
    if b.mask is None:
        return relax.const(np.ones((g, n), np.int32))
    mask = m.get(b.mask, b.mask)
    lead = list(b.shape[:-2])
    flag = op.astype(op.greater(mask, relax.const(np.float32(np.log(0.5)))), "int32")
    return op.reshape(op.broadcast_to(flag, [*lead, 1, n]), [g, n])


def _key_weighted(bb, k: relax.Expr, v: relax.Expr, bh: BlockHash, keep: relax.Expr) -> relax.Expr:
    """``[e_j v_j, e_j]`` ``[G, N, dv + 1]`` with the key bias's weights ``e_j = exp(k_j . g - max)``,
    the max over the kept keys only: a masked (or ranged-padding) key with a far larger logit would
    otherwise scale every kept key's weight towards 0 (to 0 / 0 past exp's range) and make a padded
    input's answer differ from the unpadded one's."""
    g_vec = np.stack([h.key_bias for h in bh.heads]).astype(np.float32)[:, :, None]  # [G, d, 1]
    logit = bb.emit(op.matmul(k, relax.const(g_vec)))  # [G, N, 1]
    kept = op.greater(op.expand_dims(keep, -1), relax.const(0, "int32"))
    peak = op.max(op.where(kept, logit, relax.const(np.float32(-3.0e38))), axis=[1], keepdims=True)
    e = bb.emit(op.where(kept, op.exp(op.subtract(logit, peak)), relax.const(np.float32(0))))  # no inf left
    return op.concat([op.multiply(v, e), e], axis=-1)


def _linear_attention(bb, codes_q, codes_k, keep, v: relax.Expr, c: float, dims: tuple) -> relax.Expr:
    """The packed kernels on the codes: ``[G, N, dv]`` (``dims``: ``(G, N, bits, dv)``), each kernel
    carrying its op counts (:data:`edgecompile.ir.attrs.OPS_ATTR`)."""
    g, n, bits, dv = dims
    half = bits // 2  # bits set per key, on average: value rows added per key besides Sv
    ctx_ops = {"fp32_add": g * n * (1 + half) * (dv + 1), "mem_words": g * n * (2 + dv) + g * (bits + 1) * (dv + 1)}
    out_ops = {"fp32_add": g * n * bits * (dv + 1), "fp32_mul": g * n * (dv + 1),
               "mem_words": g * n * (1 + dv) + g * (bits + 1) * (dv + 1)}  # fmt: skip
    ctx_fn = context_kernel(g, n, bits, dv, c).with_attr(OPS_ATTR, ctx_ops)
    out_fn = output_kernel(g, n, bits, dv).with_attr(OPS_ATTR, out_ops)
    ctx_gv = bb.add_func(ctx_fn, f"hash_context_{g}x{n}x{bits}x{dv}")
    out_gv = bb.add_func(out_fn, f"hash_output_{g}x{n}x{bits}x{dv}")
    ctx = bb.emit(
        relax.call_tir(
            ctx_gv, [codes_k, keep, bb.emit(v)],
            [relax.TensorType((g, bits + 1, dv), "float32"), relax.TensorType((g, bits + 1), "float32")],
        )
    )  # fmt: skip
    return bb.emit(
        relax.call_tir(out_gv, [codes_q, relax.TupleGetItem(ctx, 0), relax.TupleGetItem(ctx, 1)],
                       relax.TensorType((g, n, dv), "float32"))
    )  # fmt: skip


def _queries(bh: BlockHash, options: HashOptions, n: int) -> tuple[int, ...]:
    return tuple(range(min(options.global_queries, n))) if bh.queries is None else tuple(bh.queries)


def _with_exact_rows(bb, hashed: relax.Expr, b: AttentionBlock, queries: tuple[int, ...], m: dict) -> relax.Expr:
    """``hashed`` ``[G, N, dv]`` with the rows at ``queries`` replaced by the block's exact softmax
    attention: ``softmax(scale q_P K^T (+ mask)) V`` on a ``[G, P, N]`` logits slice (O(P N d))."""
    g, n, d, dv = b.dims
    q = op.reshape(m.get(b.q, b.q), [g, n, d])
    kt = op.reshape(m.get(b.kt, b.kt) if isinstance(b.kt, relax.Var) else b.kt, [g, d, n])
    v = op.reshape(m.get(b.v, b.v), [g, n, dv])
    p = len(queries)
    prefix = queries == tuple(range(p))
    if prefix:
        qp = op.strided_slice(q, axes=[1], begin=[0], end=[p])
    else:
        qp = op.take(q, relax.const(np.array(queries, np.int32)), axis=1)
    logits = op.matmul(qp, kt)
    if b.scale != 1.0:
        logits = op.multiply(logits, relax.const(np.float32(b.scale)))
    if b.mask is not None:
        lead = list(b.shape[:-2])
        logits = op.add(logits, op.reshape(op.broadcast_to(m.get(b.mask, b.mask), [*lead, 1, n]), [g, 1, n]))
    exact = bb.emit(op.matmul(op.nn.softmax(bb.emit(logits), axis=-1), v))  # [G, P, dv]
    if prefix:
        return op.concat([exact, op.strided_slice(hashed, axes=[1], begin=[p], end=[n])], axis=1)
    index = np.arange(n, dtype=np.int32)
    index[list(queries)] = n + np.arange(p, dtype=np.int32)  # row i: hashed[i], or exact[j] where i = queries[j]
    return op.take(op.concat([hashed, exact], axis=1), relax.const(index), axis=1)


def _codes(x: relax.Expr, bh: BlockHash, side: str, bits: int) -> relax.Expr:
    """Packed sign bits ``[G, N]`` int32 of ``x`` ``[G, N, d]``: ``sign((phi(x) - mu) W^T)`` with
    ``phi(x) = [x / |x|, exp((x / |x| . a - 1) / sigma)]`` (:func:`edgecompile.hashattn.fit.features`),
    computed as ``xn W_dir + rbf W_rbf - mu W`` (no concatenated feature tensor)."""
    d = int(bh.heads[0].anchors.shape[1])
    anchors = np.stack([h.anchors.T for h in bh.heads]).astype(np.float32)  # [G, d, m]
    inv_sigma = np.array([1.0 / h.sigma for h in bh.heads], np.float32).reshape(-1, 1, 1)
    w = np.stack([(h.w_q if side == "q" else h.w_k).T for h in bh.heads])  # [G, d + m, b]
    mu = np.stack([(h.mu_q if side == "q" else h.mu_k) for h in bh.heads])  # [G, d + m]
    offset = np.einsum("gf,gfb->gb", mu, w)[:, None, :].astype(np.float32)  # [G, 1, b]
    norm = op.rsqrt(op.add(op.sum(op.multiply(x, x), axis=[-1], keepdims=True), relax.const(np.float32(1e-12))))
    xn = op.multiply(x, norm)
    rbf = op.exp(op.multiply(op.subtract(op.matmul(xn, relax.const(anchors)), relax.const(np.float32(1))),
                             relax.const(inv_sigma)))  # fmt: skip
    proj = op.add(op.matmul(xn, relax.const(w[:, :d].astype(np.float32))),
                  op.matmul(rbf, relax.const(w[:, d:].astype(np.float32))))  # fmt: skip
    set_bits = op.astype(op.greater(proj, relax.const(offset)), "int32")
    shifted = op.left_shift(set_bits, relax.const(np.arange(bits, dtype=np.int32)))
    return op.sum(shifted, axis=[-1])
