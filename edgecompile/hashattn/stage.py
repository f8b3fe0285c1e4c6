"""The ``hash-attention`` stage: softmax attention blocks become linear attention on learned
binary codes (EcoFormer, post-training) where the model's output allows."""

from __future__ import annotations

from edgecompile.ir.stage import Stage, StageContext

OPTIONS = {
    "bits": "code bits per token, 1..31 (default 16)",
    "anchors": "RBF anchors per head (default 25)",
    "topk": "top/bottom keys per query in the hash's target (default 10)",
    "layers": "auto (default: the gate converts blocks while the output stays within max_drop), all, or "
    "names separated by ';' (attn.0;attn.2)",
    "min_seq": "blocks with fewer tokens keep softmax (default 512)",
    "max_drop": "the gate's budget on the model's output on held-out calibration samples (default 1%)",
    "iters": "Adam steps per bit of the hash fit (default 100)",
    "global_queries": "query positions per block kept on exact softmax attention over all keys, those the "
    "hash served worst in calibration (default 1: a ViT's class token; 0: none)",
}


def _parse(options: dict[str, str]):
    from edgecompile.hashattn.options import HashOptions

    return HashOptions.from_options(options)


def _apply(mod, options, ctx: StageContext):
    from edgecompile.hashattn.plan import hash_attention_model

    ctx.say(f"learning binary-hash attention ({options.spec})")
    result = hash_attention_model(mod, ctx, options)
    ctx.results["hash-attention"] = result
    return result.mod, result.to_json(options)


HASH_ATTENTION = Stage(
    "hash-attention",
    "binary-hash attention (EcoFormer, learned post-training from --calib): softmax attention blocks "
    "become linear attention on packed b-bit codes where the model's output allows; compose as "
    "hash-attention+int8",
    OPTIONS,
    _parse,
    _apply,
    order=20,
    manifest_key="hash_attention",
    needs_calib=True,
    exclusive=("fp16",),
)
