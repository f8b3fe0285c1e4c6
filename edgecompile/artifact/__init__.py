"""Artifacts on disk: the output directory and the sealed manifest (:mod:`.package`) and device
bundles with the native runner (:mod:`.bundle`, ``runner/``)."""
