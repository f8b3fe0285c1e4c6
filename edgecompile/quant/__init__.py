"""The ``int8`` and ``int8-integer-only`` recipe stages.

- :mod:`.options`: the recipe part's options (:class:`.options.QuantOptions`);
- :mod:`.plan`: calibration, per-layer error, ``keep_worst`` (:func:`.plan.quantize_model`);
- :mod:`.layers`: the layers to quantize and the tensors calibration observes;
- :mod:`.smooth`: SmoothQuant factors for linear inputs;
- :mod:`.rewrite`: the rewrite of ``main`` (:func:`.rewrite.quantize_function`), walked by
  :mod:`.rewriter` (how each tensor is held, the conversions), each layer emitted by its handler in
  the recipe's table (:mod:`.registry`): :mod:`.int8`, :mod:`.integer_only`, with the Relax
  emitters of integer ops in :mod:`.emit`;
- :mod:`.layer_switch`: one module that quantizes any single layer (per-layer sensitivity);
- :mod:`.stage`: the stage objects the recipe registry maps the presets to.
"""
