"""The ``lowrank`` stage: factorize linear layers where it saves time, ranks under one budget."""

from __future__ import annotations

from edgecompile.ir.stage import Stage, options_parser, planned

OPTIONS = {
    "ratio": "parameter ratio of each factorized layer to its break-even rank (default 0.5)",
    "rank": "one rank for every layer",
    "energy": "keep this fraction of each layer's whitened spectrum energy (e.g. 0.95)",
    "max_drop": "accuracy budget on the calibration set, e.g. 1% (top-1 changes, or relative output error)",
    "speedup": "latency budget: the factorizable layers together this many times faster (e.g. 1.5)",
    "layers": "ffn (default: FFN up/down projections) or all-linear",
    "multiple": "ranks are multiples of this (default: the target GEMM tile width, 24 on AVX2)",
    "refit": "least-squares refit of the outer factor on the calibration set (default true)",
    "gate": "speed gate: measure (this machine), estimate (multiply-adds), off; default: measure "
    "for this machine's CPU targets",
}


LOWRANK = Stage(
    "lowrank",
    "low-rank factorization of linear layers (whitened SVD from --calib, least-squares refit), ranks "
    "under one budget, a layer kept dense where factorized is not faster on the target; compose with "
    "int8 as lowrank:ratio=0.5+int8",
    OPTIONS,
    options_parser("edgecompile.lowrank.options", "LowRankOptions"),
    planned("edgecompile.lowrank.plan", "lowrank_model", "factorizing linear layers", "lowrank"),
    order=10,
    manifest_key="lowrank",
    uses_calib=True,
    coreml=True,
)
