"""Low-rank factorization of linear layers (the ``lowrank`` recipe stage): its options
(:mod:`.options`), the math (:mod:`.factorize`), the target's
measured GEMM latencies (:mod:`.latency`), the plan that picks ranks under a budget (:mod:`.plan`),
the graph rewrite (:mod:`.rewrite`) and the stage object (:mod:`.stage`)."""
