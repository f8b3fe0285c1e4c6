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
4. Rewrite (:mod:`edgecompile.hashattn.rewrite`): per block, ``x / |x|`` -> anchors matmul -> ``exp``
   -> centre -> projection -> ``sign`` bits packed into an int32 word per token, then the packed
   kernels of :mod:`edgecompile.hashattn.kernels` (additions only on the codes). ``global_queries`` query
   positions per block (default 1: those whose hash rows erred most in calibration, the class
   token in a ViT, whose row alone reaches the classifier) keep exact softmax attention over all
   keys, a ``[G, P, N]`` logits slice, still linear in N; the manifest lists them. The float
   softmax path is otherwise dropped. Composes with ``int8`` / ``int8-integer-only`` after it:
   the hash path stays float (its matmuls have 3-D constant operands, which int8 leaves alone);
   the rest is quantized as usual.

Energy per block (``energy_softmax_uj`` / ``energy_hash_uj``) is from op counts with the target
profile's table, the same conventions as :mod:`edgecompile.ir.energy` (:mod:`edgecompile.hashattn.energy`).
The options are :class:`edgecompile.hashattn.options.HashOptions`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from edgecompile.calibrate.capture import Runner, padded_runner
from edgecompile.calibrate.output_drop import output_drop
from edgecompile.errors import RecipeError
from edgecompile.hashattn.energy import block_energy
from edgecompile.hashattn.fit import MAX_QUERIES, HeadHash, fit_head
from edgecompile.hashattn.match import AttentionBlock, find_attention
from edgecompile.hashattn.options import HashOptions
from edgecompile.hashattn.rewrite import BlockHash, rewrite_blocks
from edgecompile.ir.host import HostFunction
from edgecompile.ir.stage import StageContext
from edgecompile.ir.switch import flags
from edgecompile.ir.walk import building_with, carry_functions

C_GRID = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 8.0, 32.0)  # c / b tried (large: the key bias alone)


@dataclass
class HashResult:
    mod: tvm.IRModule
    layers: list[dict] = field(default_factory=list)
    drop: dict | None = None  # the converted model's output drop on held-out calibration samples
    drop_all: dict | None = None  # with every eligible block converted (no gate)
    samples: int = 0
    hashes: dict = field(default_factory=dict, repr=False)  # block name -> BlockHash, of the converted ones
    options: HashOptions | None = field(default=None, repr=False)

    def retarget(self, mod: tvm.IRModule) -> tvm.IRModule:
        """This plan on ``mod``, the model imported at other static input shapes (a bucket of a
        ranged artifact, :mod:`edgecompile.ranged`): the blocks converted on the largest build, by
        name, with the same hashes and ``c``; exact query positions past this build's length are
        dropped (there they would be padding rows)."""
        names = [r["name"] for r in self.layers if r.get("converted")]
        if not names:
            return mod
        func = mod["main"]
        blocks = {b.name: b for b in find_attention(func)}
        if any(n not in blocks or blocks[n].reason for n in names):
            raise RecipeError(
                "hash-attention: the model's attention blocks differ between the bucket sizes of its ranged "
                "inputs, so one plan cannot serve them all; compile a fixed shape"
            )
        hashes = {n: _within(self.hashes[n], blocks[n].seq) for n in names}
        out = rewrite_blocks(func, [blocks[n] for n in names], hashes, self.options, switch=False)
        return carry_functions(relax.transform.DeadCodeElimination()(out), mod)

    def to_json(self, options: HashOptions) -> dict:
        return {
            "options": options.spec,
            "samples": self.samples,
            "layers": self.layers,
            "drop": self.drop,
            "drop_no_gate": self.drop_all,
        }


def hash_attention_model(mod: tvm.IRModule, ctx: StageContext, options: HashOptions) -> HashResult:
    """The rewritten module of ``mod`` (module docstring): learned on ``ctx.samples`` run with
    ``ctx.host_build``, energy from ``ctx.profile.energy``; ``ctx.progress(stage, done, total)``."""
    say = ctx.progress
    func = mod["main"]
    build = building_with(ctx.host_build, mod)
    blocks = find_attention(func)
    if not blocks:
        raise RecipeError("hash-attention: the model has no softmax attention block (softmax(Q K^T) V)")
    samples = ctx.samples
    if not samples:
        raise RecipeError("hash-attention learns its hash from calibration data: pass --calib")
    chosen = _chosen(blocks, options)
    rows = {b.name: _row(b, ctx.profile.energy, options) for b in blocks}
    eligible = _eligible(blocks, chosen, options, rows)
    result = HashResult(mod, samples=len(samples))
    if not eligible:
        result.layers = list(rows.values())
        return result
    held = max(1, len(samples) // 4) if len(samples) > 1 else 0
    fit_samples, test_samples = samples[: len(samples) - held] or samples, samples[len(samples) - held :] or samples
    wanted = list(dict.fromkeys(v for b in eligible for v in _captured_vars(b)))
    run = padded_runner(func, wanted, ctx.input_names, build, ctx.padding)  # a ranged compile's padding cut
    captured = _capture(run, wanted, eligible, samples, say)
    hashes = _fit_blocks(eligible, captured, len(fit_samples), options, rows, say)
    switched = carry_functions(rewrite_blocks(func, eligible, hashes, options, switch=True), mod)
    outputs = SwitchedOutputs(HostFunction(switched, build), eligible, test_samples, ctx.input_names, run.trim_first)
    on = _gate(eligible, hashes, outputs, options, rows, result, say)
    for b in eligible:
        rows[b.name]["converted"] = b.name in on
    convert = [b for b in eligible if b.name in on]
    out = rewrite_blocks(func, convert, hashes, options, switch=False) if convert else tvm.IRModule({"main": func})
    result.mod = carry_functions(relax.transform.DeadCodeElimination()(out), mod)
    result.layers = list(rows.values())
    result.hashes, result.options = {b.name: hashes[b.name] for b in convert}, options
    return result


def _within(bh: BlockHash, n: int) -> BlockHash:
    """``bh`` for a build of ``n`` tokens: its exact query positions below ``n``."""
    return bh if bh.queries is None else dataclasses.replace(bh, queries=tuple(q for q in bh.queries if q < n))


def _chosen(blocks: list[AttentionBlock], options: HashOptions) -> list[str] | None:
    """The block names ``layers=`` lists (None: ``auto`` or ``all``); an unknown one is an error."""
    names = {b.name for b in blocks}
    chosen = None if options.layers in ("auto", "all") else [n for n in options.layers.replace(";", " ").split() if n]
    if chosen is not None and (unknown := [n for n in chosen if n not in names]):
        raise RecipeError(f"hash-attention: no attention block {unknown[0]} (blocks: {', '.join(sorted(names))})")
    return chosen


def _eligible(blocks: list[AttentionBlock], chosen, options: HashOptions, rows: dict) -> list[AttentionBlock]:
    """The blocks the recipe may convert; the others' rows get the reason."""
    eligible = []
    for b in blocks:
        why = b.reason or (f"sequence {b.seq} < min_seq {options.min_seq}" if b.seq < options.min_seq else "")
        if chosen is not None and b.name not in chosen:
            why = why or "not in layers="
        if why:
            rows[b.name]["reason"] = why
        else:
            eligible.append(b)
    return eligible


def _fit_blocks(eligible, captured: dict, n_fit: int, options: HashOptions, rows: dict, say) -> dict[str, BlockHash]:
    """Each eligible block's hash (:func:`_fit_block`), its fidelity, ``c`` and exact queries in its row."""
    hashes = {}
    for i, b in enumerate(eligible):
        say(f"fitting the hash of {b.name}", i, len(eligible))
        hashes[b.name] = _fit_block(b, captured[b.name], n_fit, options)
        rows[b.name]["fidelity_relerr"] = round(hashes[b.name].fidelity, 5)
        rows[b.name]["c"] = hashes[b.name].c
        rows[b.name]["global_queries"] = list(hashes[b.name].queries)
    say("fitting hashes", len(eligible), len(eligible))
    return hashes


class SwitchedOutputs:
    """The model's output on the held-out samples from one build whose blocks each compute both ways
    (:mod:`edgecompile.ir.switch`), called with the set of blocks hashed."""

    def __init__(self, run: HostFunction, blocks: list[AttentionBlock], samples: list[dict], names: list[str], trim):
        self.run, self.blocks, self.samples, self.names, self.trim = run, blocks, samples, names, trim

    def __call__(self, on: set[str]) -> list[np.ndarray]:
        value = tvm.runtime.tensor(flags(len(self.blocks), [k for k, b in enumerate(self.blocks) if b.name in on]))
        return [self.trim(self.run.first(*[s[n] for n in self.names], value), s) for s in self.samples]


def _gate(eligible, hashes: dict, outputs: SwitchedOutputs, options: HashOptions, rows: dict, result, say) -> set[str]:
    """The blocks to convert, ``result``'s drops filled: with ``layers=auto`` in order of fidelity,
    each kept while the model's output stays within ``max_drop``; otherwise every eligible one."""
    reference = outputs(set())
    result.drop_all = output_drop(reference, outputs({b.name for b in eligible}))
    if options.layers != "auto":
        result.drop = result.drop_all
        return {b.name for b in eligible}
    on: set[str] = set()
    order = sorted(eligible, key=lambda b: hashes[b.name].fidelity)
    for i, b in enumerate(order):
        say("gating layers", i, len(order))
        trial = output_drop(reference, outputs(on | {b.name}))
        if trial["drop"] <= options.max_drop:
            on.add(b.name)
            result.drop = trial
        else:
            rows[b.name]["reason"] = (
                f"the model's output would move {trial['drop']:.3g} > max_drop {options.max_drop:g}"
            )
    say("gating layers", len(order), len(order))
    result.drop = result.drop or output_drop(reference, reference)
    return on


def _row(b: AttentionBlock, table: dict, options: HashOptions) -> dict:
    g, n, d, dv = b.dims
    soft, hashed = block_energy(g, n, d, dv, options, table)
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


def _captured_vars(b: AttentionBlock) -> list[relax.Var]:
    return [b.q, b.kt, b.v, b.logits, b.output, *([b.mask] if isinstance(b.mask, relax.Var) else [])]


def _capture(run: Runner, wanted: list, blocks, samples, say) -> dict[str, list[dict]]:
    """Per block and sample: q, k ([G, N, d]), v, the block output ([G, N, dv]), keep, and the
    logits ([G, Nq, N]) of a query subsample ``rows`` (the hash's fitting target); ``run`` returns
    ``wanted``, N the sample's own length where a ranged compile padded it."""
    pos = {v: i for i, v in enumerate(wanted)}
    rng = np.random.default_rng(0)
    out: dict[str, list[dict]] = {b.name: [] for b in blocks}
    for i, s in enumerate(samples):
        got = run(s)
        for b in blocks:
            g, _, d, dv = b.dims
            q = got[pos[b.q]].reshape(g, -1, d)
            n = q.shape[1]
            k = np.swapaxes(got[pos[b.kt]].reshape(g, d, n), -1, -2)
            lg = got[pos[b.logits]].reshape(g, n, n)
            keep = None
            if b.mask is not None:
                mask = got[pos[b.mask]] if b.mask in pos else b.mask.data.numpy()[..., :n]
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
    w = (hq @ hk.T + c) * h.key_weights(k, keep)[None, :]
    if keep is not None:
        w = w * keep[None, :]
    return (w @ v) / w.sum(-1, keepdims=True)


def _fit_block(b: AttentionBlock, caps: list[dict], n_fit: int, options: HashOptions) -> BlockHash:
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
                options.bits, options.anchors, options.topk, options.iters, seed=h, key_bias=options.key_bias,
            )
        )  # fmt: skip

    def errors(c_over_b: float, caps_: list[dict]) -> tuple[np.ndarray, float]:
        """Squared error per query position of the hash rows (samples may differ in length), and
        the output's squared norm."""
        per_row, den = np.zeros(max(c["q"].shape[1] for c in caps_)), 0.0
        for cap in caps_:
            for h, hh in enumerate(heads):
                keep = None if cap["keep"] is None else cap["keep"][h]
                o = _hash_outputs(hh, cap["q"][h], cap["k"][h], cap["v"][h], keep, c_over_b * options.bits)
                per_row[: o.shape[0]] += np.sum((o - cap["out"][h]) ** 2, axis=-1)
                den += float(np.sum(cap["out"][h].astype(np.float64) ** 2))
        return per_row, max(den, 1e-30)

    n_exact = min(options.global_queries, caps[0]["q"].shape[1])

    def rest(c_over_b: float) -> float:  # the fitting error without each sample's worst rows
        per_row, den = errors(c_over_b, fit)
        return float(np.sqrt((per_row.sum() - np.sort(per_row)[::-1][:n_exact].sum()) / den))

    best = min(C_GRID, key=rest)
    per_row, den = errors(best, test)
    queries = tuple(sorted(int(i) for i in np.argsort(-per_row, kind="stable")[:n_exact]))
    fidelity = float(np.sqrt((per_row.sum() - per_row[list(queries)].sum()) / den))
    return BlockHash(heads, best * options.bits, fidelity, queries)
