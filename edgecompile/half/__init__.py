"""The ``fp16`` recipe stage: float16 matmuls with float32 accumulation (:mod:`.rewrite`)."""
