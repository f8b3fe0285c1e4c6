"""The ``hash-attention`` recipe stage (EcoFormer's binary-hash attention, learned post-training):
matching attention blocks (:mod:`.match`), fitting the hash (:mod:`.fit`), the packed-code kernels
(:mod:`.kernels`), the plan with its gate (:mod:`.plan`), the graph rewrite (:mod:`.rewrite`),
options (:mod:`.options`) and the stage object (:mod:`.stage`)."""
