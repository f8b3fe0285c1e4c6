"""The ``hash-attention`` stage: softmax attention blocks become linear attention on learned
binary codes (EcoFormer, post-training) where the model's output allows."""

from __future__ import annotations

from edgecompile.errors import RecipeError
from edgecompile.ir.stage import Stage, options_parser, planned

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


def _missing_calib() -> RecipeError:
    return RecipeError("hash-attention learns its hash from calibration data: pass --calib")


HASH_ATTENTION = Stage(
    "hash-attention",
    "binary-hash attention (EcoFormer, learned post-training from --calib): softmax attention blocks "
    "become linear attention on packed b-bit codes where the model's output allows; compose as "
    "hash-attention+int8",
    OPTIONS,
    options_parser("edgecompile.hashattn.options", "HashOptions"),
    planned("edgecompile.hashattn.plan", "hash_attention_model", "learning binary-hash attention", "hash-attention"),
    order=20,
    manifest_key="hash_attention",
    missing_calib=_missing_calib,
    exclusive=("fp16",),
)
