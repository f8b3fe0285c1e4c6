"""Low-rank factorization of linear layers (the ``lowrank`` recipe): the math
(:mod:`.factorize`), the target's measured GEMM latencies (:mod:`.latency`) and the plan that picks
ranks under a budget (:mod:`.plan`); the graph rewrite is :mod:`edgecompile.lowrank.rewrite`."""
