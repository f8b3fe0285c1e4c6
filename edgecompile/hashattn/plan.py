"""The ``hash-attention`` recipe: softmax attention blocks rewritten to linear attention on
learned binary codes (EcoFormer, post-training), where it keeps the model's output.

1. Find the blocks (:mod:`edgecompile.hashattn.match`); those shorter than ``min_seq`` tokens, with
   a per-query mask, or whose scores have other readers stay softmax, with the reason.
2. Capture each block's ``Q``, ``K``, ``V``, logits and output on the calibration samples (a
   quarter of them, at least one, held out) and fit a hash per head
   (:mod:`edgecompile.hashattn.fit`); the constant ``c`` of the weights ``h_i . h_j + c`` (``b`` to
   ``4b``) is chosen on the fitting samples; the block's fidelity is its output's relative error on
   the held-out ones, with the exact rows in place (as the rewrite computes them).
3. Gate (``layers=auto``): blocks are converted in order of fidelity, each kept only if the
   model's output on the held-out samples stays within ``max_drop`` of float (top-1 changes and
   probability shift for a classifier, relative L2 otherwise:
   :func:`edgecompile.calibrate.output_drop.output_drop`); all candidate sets are measured on one
   build whose blocks each compute both ways behind a runtime switch. ``layers=all`` converts
   every eligible block, ``layers=attn.0;attn.2`` those.
4. Rewrite: per block, ``x / |x|`` -> anchors matmul -> ``exp`` -> centre -> projection ->
   ``sign`` bits packed into an int32 word per token, then the packed kernels of
   :mod:`edgecompile.hashattn.kernels` (additions only on the codes). ``global_queries`` query
   positions per block (default 1: those whose hash rows erred most in calibration, the class
   token in a ViT, whose row alone reaches the classifier) keep exact softmax attention over all
   keys, a ``[G, P, N]`` logits slice, still linear in N; the manifest lists them. The float
   softmax path is otherwise dropped. Composes with ``int8`` / ``int8-integer-only`` after it:
   the hash path stays float (its matmuls have 3-D constant operands, which int8 leaves alone);
   the rest is quantized as usual.

Energy per block (``energy_softmax_uj`` / ``energy_hash_uj``) is from op counts with the target
profile's table, the same conventions as :mod:`edgecompile.ir.energy`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from edgecompile.calibrate.capture import Runner, with_outputs
from edgecompile.calibrate.output_drop import output_drop
from edgecompile.errors import RecipeError
from edgecompile.hashattn.fit import MAX_QUERIES, HeadHash, fit_head
from edgecompile.hashattn.kernels import context_kernel, output_kernel
from edgecompile.hashattn.match import AttentionBlock, find_attention
from edgecompile.ir.energy import OPS_ATTR
from edgecompile.ir.walk import building_with, carry_functions, rebuild

op = relax.op
SWITCH_INPUT = "edgecompile_hash_layers"
C_GRID = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 8.0, 32.0)  # c / b tried (large: the key bias alone)


@dataclass(frozen=True)
class HashConfig:
    bits: int = 16
    anchors: int = 25
    topk: int = 10
    layers: str = "auto"  # auto | all | names separated by ';'
    min_seq: int = 512
    max_drop: float = 0.01  # fraction
    iters: int = 100
    key_bias: bool = True  # weights exp(k_j . g) (h_i . h_j + c): the keys' shared popularity apart from the bits
    global_queries: int = 1  # query positions per block computed with exact softmax (the worst in calibration)

    @property
    def spec(self) -> str:
        return (
            f"bits={self.bits} anchors={self.anchors} topk={self.topk} layers={self.layers} "
            f"min_seq={self.min_seq} max_drop={self.max_drop * 100:g}% global_queries={self.global_queries}"
        )


def config_from_options(options: dict[str, str]) -> HashConfig:
    """The ``hash-attention`` recipe part's options (see :data:`edgecompile.recipe.PRESETS`)."""
    try:
        raw = options.get("max_drop", "1%")
        drop = float(raw.rstrip("%")) / 100 if raw.endswith("%") else float(raw)
        cfg = HashConfig(
            bits=int(options.get("bits", 16)),
            anchors=int(options.get("anchors", 25)),
            topk=int(options.get("topk", 10)),
            layers=options.get("layers", "auto"),
            min_seq=int(options.get("min_seq", 512)),
            max_drop=drop,
            iters=int(options.get("iters", 100)),
            key_bias=options.get("key_bias", "1").lower() not in ("0", "false", "no", "off"),
            global_queries=int(options.get("global_queries", 1)),
        )
    except ValueError as e:
        raise RecipeError(f"hash-attention: malformed option value ({e})") from e
    if not 1 <= cfg.bits <= 31:
        raise RecipeError(f"hash-attention: bits must be 1..31 (one int32 word per token), got {cfg.bits}")
    if cfg.anchors < 2 or cfg.topk < 1 or cfg.min_seq < 0 or cfg.iters < 0 or not 0 <= cfg.max_drop <= 1:
        raise RecipeError("hash-attention: anchors >= 2, topk >= 1, min_seq >= 0, iters >= 0, max_drop in 0..100%")
    if cfg.global_queries < 0:
        raise RecipeError(f"hash-attention: global_queries must be >= 0, got {cfg.global_queries}")
    return cfg


@dataclass
class BlockHash:
    """What the rewrite bakes into one block: a hash per group (head), the constant c and the query
    positions computed exactly (None: the first ``global_queries`` of the config)."""

    heads: list[HeadHash]
    c: float
    fidelity: float  # relative error of the block output on held-out calibration samples (exact rows included)
    queries: tuple[int, ...] | None = None  # sorted query positions with exact softmax rows


@dataclass
class HashResult:
    mod: tvm.IRModule
    layers: list[dict] = field(default_factory=list)
    drop: dict | None = None  # the converted model's output drop on held-out calibration samples
    drop_all: dict | None = None  # with every eligible block converted (no gate)
    samples: int = 0

    def to_json(self, config: HashConfig) -> dict:
        return {
            "options": config.spec,
            "samples": self.samples,
            "layers": self.layers,
            "drop": self.drop,
            "drop_no_gate": self.drop_all,
        }


def hash_attention_model(
    mod: tvm.IRModule,
    samples: list[dict],
    input_names: list[str],
    config: HashConfig,
    build: Callable[[tvm.IRModule], object],
    energy_table: dict,
    progress: Callable[[str, int, int], None] | None = None,
) -> HashResult:
    """The rewritten module of ``mod`` (module docstring); ``build`` compiles for this machine."""
    say = progress or (lambda *_: None)
    func = mod["main"]
    build = building_with(build, mod)
    blocks = find_attention(func)
    if not blocks:
        raise RecipeError("hash-attention: the model has no softmax attention block (softmax(Q K^T) V)")
    if not samples:
        raise RecipeError("hash-attention learns its hash from calibration data: pass --calib")
    names = {b.name for b in blocks}
    chosen = None if config.layers in ("auto", "all") else [n for n in config.layers.replace(";", " ").split() if n]
    if chosen is not None and (unknown := [n for n in chosen if n not in names]):
        raise RecipeError(f"hash-attention: no attention block {unknown[0]} (blocks: {', '.join(sorted(names))})")
    rows = {b.name: _row(b, energy_table, config) for b in blocks}
    eligible = []
    for b in blocks:
        why = b.reason or (f"sequence {b.seq} < min_seq {config.min_seq}" if b.seq < config.min_seq else "")
        if chosen is not None and b.name not in chosen:
            why = why or "not in layers="
        if why:
            rows[b.name]["reason"] = why
        else:
            eligible.append(b)
    result = HashResult(mod, samples=len(samples))
    if not eligible:
        result.layers = list(rows.values())
        return result
    held = max(1, len(samples) // 4) if len(samples) > 1 else 0
    fit_samples, test_samples = samples[: len(samples) - held] or samples, samples[len(samples) - held :] or samples
    captured = _capture(func, eligible, input_names, build, samples, say)
    hashes = {}
    for i, b in enumerate(eligible):
        say(f"fitting the hash of {b.name}", i, len(eligible))
        hashes[b.name] = _fit_block(b, captured[b.name], len(fit_samples), config)
        rows[b.name]["fidelity_relerr"] = round(hashes[b.name].fidelity, 5)
        rows[b.name]["c"] = hashes[b.name].c
        rows[b.name]["global_queries"] = list(hashes[b.name].queries)
    say("fitting hashes", len(eligible), len(eligible))
    switched = carry_functions(_rewrite(func, eligible, hashes, config, switch=True), mod)
    vm = relax.VirtualMachine(build(switched), tvm.cpu())

    def outputs(on: set[str]) -> list[np.ndarray]:
        flags = tvm.runtime.tensor(np.array([b.name in on for b in eligible], np.int32))
        outs = []
        for s in test_samples:
            y = vm["main"](*[tvm.runtime.tensor(s[n]) for n in input_names], flags)
            while not hasattr(y, "numpy"):
                y = y[0]
            outs.append(y.numpy())
        return outs

    reference = outputs(set())
    result.drop_all = output_drop(reference, outputs({b.name for b in eligible}))
    if config.layers == "auto":
        on: set[str] = set()
        order = sorted(eligible, key=lambda b: hashes[b.name].fidelity)
        for i, b in enumerate(order):
            say("gating layers", i, len(order))
            trial = output_drop(reference, outputs(on | {b.name}))
            if trial["drop"] <= config.max_drop:
                on.add(b.name)
                result.drop = trial
            else:
                rows[b.name]["reason"] = (
                    f"the model's output would move {trial['drop']:.3g} > max_drop {config.max_drop:g}"
                )
        say("gating layers", len(order), len(order))
        result.drop = result.drop or output_drop(reference, reference)
    else:
        on = {b.name for b in eligible}
        result.drop = result.drop_all
    for b in eligible:
        rows[b.name]["converted"] = b.name in on
    convert = [b for b in eligible if b.name in on]
    out = _rewrite(func, convert, hashes, config, switch=False) if convert else tvm.IRModule({"main": func})
    result.mod = carry_functions(relax.transform.DeadCodeElimination()(out), mod)
    result.layers = list(rows.values())
    return result


def _groups(b: AttentionBlock) -> tuple[int, int, int, int]:
    shape = b.shape
    g = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    dv = int(b.v.ty.shape.values[-1])
    return g, shape[-2], shape[-1], dv


def _row(b: AttentionBlock, table: dict, config: HashConfig) -> dict:
    g, n, d, dv = _groups(b)
    soft, hashed = _energy(g, n, d, dv, config, table)
    return {
        "name": b.name,
        "seq": n,
        "heads": g,
        "head_dim": d,
        "converted": False,
        "reason": "",
        "energy_softmax_uj": round(soft, 4),
        "energy_hash_uj": round(hashed, 4),
    }


def _energy(g: int, n: int, d: int, dv: int, config: HashConfig, table: dict) -> tuple[float, float]:
    """Attention energy (uJ) of one block, softmax vs hash, from op counts with
    :mod:`edgecompile.ir.energy`'s conventions: a multiply-add is a multiply and an add; exp 4 + 4
    and softmax 5 + 5 per element; every op reads its operands and writes its result (32-bit
    words). The hash side assumes half the bits of a key set (its context adds), and adds the
    ``global_queries`` rows computed exactly (softmax's costs on ``P`` of the ``N`` queries, plus
    reading K and V and writing the output around them)."""
    mul, add, mem = table["fp32_mul"], table["fp32_add"], table["mem_read_32b"]
    nn = g * n * n
    # Q K^T, scale, (mask), softmax, P V
    soft_ops = nn * d + nn + 5 * nn + nn * dv
    soft = soft_ops * mul + (soft_ops + nn) * add
    soft += (g * n * d * 2 + nn + 2 * nn * 4 + g * n * dv + nn + g * n * dv) * mem
    m, b = config.anchors, config.bits
    rows = 2 * g * n  # queries and keys: normalise, anchors, exp, centre, projection, pack
    feat_mul = rows * (2 * d + m * d + 5 * m + m * b)
    feat_add = rows * (d + m * d + 5 * m + m * b + 2 * b)
    ctx_add = g * n * (1 + b // 2) * dv  # each kept key: its value row into Sv and into its set bits' rows
    out_add, out_mul = g * n * b * (dv + 1), g * n * (dv + 1)  # +-C[t] rows, the denominator, 1/den
    # the key bias: k_j . g, exp (4 + 4), e_j v_j and the final ratio (a divide counted as a multiply)
    bias_mul = g * n * (d + 4 + 2 * dv) if config.key_bias else 0
    bias_add = g * n * (d + 4) if config.key_bias else 0
    hashed = (feat_mul + out_mul + bias_mul) * mul + (feat_add + ctx_add + out_add + bias_add) * add
    hashed += (rows * (2 * d + 4 * m + 2 * b) + g * n * dv * 2 + g * n * (b + 1) * (dv + 1)) * mem
    hashed += (g * n * (d + 2 * dv + 2) if config.key_bias else 0) * mem
    # the global queries' exact rows: softmax attention on a [G, P, N] slice, and their scatter
    pn = g * min(config.global_queries, n) * n
    exact_ops = pn * d + pn + 5 * pn + pn * dv
    hashed += exact_ops * mul + (exact_ops + pn) * add
    hashed += (g * min(config.global_queries, n) * (d + 2 * dv) + g * n * d + pn * 10 + g * n * dv + g * n * dv) * mem
    return soft * 1e-6, hashed * 1e-6


def _capture(func, blocks, names, build, samples, say) -> dict[str, list[dict]]:
    """Per block and sample: q, k ([G, N, d]), v, the block output ([G, N, dv]), keep, and the
    logits ([G, Nq, N]) of a query subsample ``rows`` (the hash's fitting target)."""
    wanted = []
    for b in blocks:
        wanted += [b.q, b.kt, b.v, b.logits, b.output]
        if isinstance(b.mask, relax.Var):
            wanted.append(b.mask)
    run = Runner(with_outputs(func, list(dict.fromkeys(wanted))), names, build)
    pos = {v: i for i, v in enumerate(dict.fromkeys(wanted))}
    rng = np.random.default_rng(0)
    out: dict[str, list[dict]] = {b.name: [] for b in blocks}
    for i, s in enumerate(samples):
        got = run(s)
        for b in blocks:
            g, n, d, dv = _groups(b)
            q = got[pos[b.q]].reshape(g, n, d)
            k = np.swapaxes(got[pos[b.kt]].reshape(g, d, n), -1, -2)
            lg = got[pos[b.logits]].reshape(g, n, n)
            keep = None
            if b.mask is not None:
                mask = got[pos[b.mask]] if b.mask in pos else b.mask.data.numpy()
                keep = np.broadcast_to(mask, (*b.shape[:-2], 1, n)).reshape(g, n) > np.log(0.5)
            rows = np.sort(rng.choice(n, size=min(n, MAX_QUERIES), replace=False))
            out[b.name].append(
                {"q": q, "k": k, "v": got[pos[b.v]].reshape(g, n, dv), "logits": lg[:, rows], "rows": rows,
                 "keep": keep, "out": got[pos[b.output]].reshape(g, n, dv)}
            )  # fmt: skip
        say("capturing attention", i + 1, len(samples))
    return out


def _hash_outputs(h: HeadHash, q, k, v, keep, c: float) -> np.ndarray:
    """The rewritten block's output for one head in numpy (float64): rows of ``q``."""
    hq = h.codes(q, "q").astype(np.float64) * 2 - 1
    hk = h.codes(k, "k").astype(np.float64) * 2 - 1
    w = (hq @ hk.T + c) * h.key_weights(k)[None, :]
    if keep is not None:
        w = w * keep[None, :]
    return (w @ v) / w.sum(-1, keepdims=True)


def _fit_block(b: AttentionBlock, caps: list[dict], n_fit: int, config: HashConfig) -> BlockHash:
    """The block's hashes, ``c`` and exact query positions. ``c`` minimises the fitting samples'
    error of all but the ``global_queries`` worst rows; the positions are those whose hash rows
    err most on the held-out samples (summed squared error over heads and samples: the fitting
    samples would favour the query rows the hash was fitted on); the fidelity is the held-out
    relative error of the whole output with those rows exact, as the rewrite computes it."""
    g = caps[0]["q"].shape[0]
    fit, test = caps[:n_fit], caps[n_fit:] or caps
    heads = []
    for h in range(g):
        heads.append(
            fit_head(
                [c["q"][h][c["rows"]] for c in fit], [c["k"][h] for c in fit], [c["logits"][h] for c in fit],
                [None if c["keep"] is None else c["keep"][h] for c in fit],
                config.bits, config.anchors, config.topk, config.iters, seed=h, key_bias=config.key_bias,
            )
        )  # fmt: skip

    def errors(c_over_b: float, caps_: list[dict]) -> tuple[np.ndarray, float]:
        """Squared error per query position of the hash rows, and the output's squared norm."""
        per_row, den = 0.0, 0.0
        for cap in caps_:
            for h, hh in enumerate(heads):
                keep = None if cap["keep"] is None else cap["keep"][h]
                o = _hash_outputs(hh, cap["q"][h], cap["k"][h], cap["v"][h], keep, c_over_b * config.bits)
                per_row = per_row + np.sum((o - cap["out"][h]) ** 2, axis=-1)
                den += float(np.sum(cap["out"][h].astype(np.float64) ** 2))
        return np.asarray(per_row), max(den, 1e-30)

    n_exact = min(config.global_queries, caps[0]["q"].shape[1])

    def rest(c_over_b: float) -> float:  # the fitting error without each sample's worst rows
        per_row, den = errors(c_over_b, fit)
        return float(np.sqrt((per_row.sum() - np.sort(per_row)[::-1][:n_exact].sum()) / den))

    best = min(C_GRID, key=rest)
    per_row, den = errors(best, test)
    queries = tuple(sorted(int(i) for i in np.argsort(-per_row, kind="stable")[:n_exact]))
    fidelity = float(np.sqrt((per_row.sum() - per_row[list(queries)].sum()) / den))
    return BlockHash(heads, best * config.bits, fidelity, queries)


def _rewrite(func, blocks: list[AttentionBlock], hashes: dict, config: HashConfig, switch: bool) -> tvm.IRModule:
    """``func`` with ``blocks`` on the hash path; with ``switch``, each block computes both ways and
    the int32 vector input :data:`SWITCH_INPUT` picks (1: hash) per block, in ``blocks`` order."""
    by_output = {b.output: (k, b) for k, b in enumerate(blocks)}
    flags = relax.Var(SWITCH_INPUT, relax.TensorType((len(blocks),), "int32")) if switch else None

    def emit(bb, binding, m):
        hit = by_output.get(binding.var)
        if hit is None:
            return None
        k, b = hit
        hashed = _emit_block(bb, b, hashes[b.name], config, m)
        if not switch:
            return bb.emit(hashed, name_hint=binding.var.name)
        soft = bb.emit(relax.Call(binding.value.op, [m.get(a, a) for a in binding.value.args], binding.value.attrs))
        on = op.equal(op.take(flags, relax.const(np.int32(k)), axis=0), relax.const(np.int32(1)))
        return bb.emit(op.where(on, hashed, soft), name_hint=binding.var.name)

    return rebuild(func, emit, extra_params=[flags] if switch else None)


def _emit_block(bb, b: AttentionBlock, bh: BlockHash, config: HashConfig, m: dict) -> relax.Expr:
    g, n, d, dv = _groups(b)
    bits = config.bits
    q = op.reshape(m.get(b.q, b.q), [g, n, d])
    kt = m.get(b.kt, b.kt) if isinstance(b.kt, relax.Var) else b.kt
    k = op.reshape(op.permute_dims(kt, [*range(len(b.shape) - 2), len(b.shape) - 1, len(b.shape) - 2]), [g, n, d])
    v = op.reshape(m.get(b.v, b.v), [g, n, dv])
    codes_q = bb.emit(_codes(q, bh, "q", bits))
    codes_k = bb.emit(_codes(k, bh, "k", bits))
    if b.mask is None:
        keep = relax.const(np.ones((g, n), np.int32))
    else:
        mask = m.get(b.mask, b.mask)
        lead = list(b.shape[:-2])
        flag = op.astype(op.greater(mask, relax.const(np.float32(np.log(0.5)))), "int32")
        keep = op.reshape(op.broadcast_to(flag, [*lead, 1, n]), [g, n])
    keep = bb.emit(keep)
    weighted = bh.heads[0].key_bias is not None
    if weighted:  # values [e_j v_j, e_j], e_j = exp(k_j . g - max): the output is their ratio
        g_vec = np.stack([h.key_bias for h in bh.heads]).astype(np.float32)[:, :, None]  # [G, d, 1]
        logit = bb.emit(op.matmul(k, relax.const(g_vec)))  # [G, N, 1]
        e = bb.emit(op.exp(op.subtract(logit, op.max(logit, axis=[1], keepdims=True))))
        v = op.concat([op.multiply(v, e), e], axis=-1)
        dv += 1
    half = bits // 2  # bits set per key, on average: value rows added per key besides Sv
    ctx_ops = {"fp32_add": g * n * (1 + half) * (dv + 1), "mem_words": g * n * (2 + dv) + g * (bits + 1) * (dv + 1)}
    out_ops = {"fp32_add": g * n * bits * (dv + 1), "fp32_mul": g * n * (dv + 1),
               "mem_words": g * n * (1 + dv) + g * (bits + 1) * (dv + 1)}  # fmt: skip
    ctx_fn = context_kernel(g, n, bits, dv, bh.c).with_attr(OPS_ATTR, ctx_ops)
    out_fn = output_kernel(g, n, bits, dv).with_attr(OPS_ATTR, out_ops)
    ctx_gv = bb.add_func(ctx_fn, f"hash_context_{g}x{n}x{bits}x{dv}")
    out_gv = bb.add_func(out_fn, f"hash_output_{g}x{n}x{bits}x{dv}")
    ctx = bb.emit(
        relax.call_tir(
            ctx_gv, [codes_k, keep, bb.emit(v)],
            [relax.TensorType((g, bits + 1, dv), "float32"), relax.TensorType((g, bits + 1), "float32")],
        )
    )  # fmt: skip
    out = bb.emit(
        relax.call_tir(out_gv, [codes_q, relax.TupleGetItem(ctx, 0), relax.TupleGetItem(ctx, 1)],
                       relax.TensorType((g, n, dv), "float32"))
    )  # fmt: skip
    if weighted:
        out = op.divide(op.strided_slice(out, axes=[2], begin=[0], end=[dv - 1]),
                        op.strided_slice(out, axes=[2], begin=[dv - 1], end=[dv]))  # fmt: skip
    queries = _queries(bh, config, n)
    if queries:
        out = _with_exact_rows(bb, bb.emit(out), b, queries, m)
    return op.reshape(out, [int(x) for x in b.output.ty.shape.values])


def _queries(bh: BlockHash, config: HashConfig, n: int) -> tuple[int, ...]:
    return tuple(range(min(config.global_queries, n))) if bh.queries is None else tuple(bh.queries)


def _with_exact_rows(bb, hashed: relax.Expr, b: AttentionBlock, queries: tuple[int, ...], m: dict) -> relax.Expr:
    """``hashed`` ``[G, N, dv]`` with the rows at ``queries`` replaced by the block's exact softmax
    attention: ``softmax(scale q_P K^T (+ mask)) V`` on a ``[G, P, N]`` logits slice (O(P N d))."""
    g, n, d, dv = _groups(b)
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
