"""The ``int8`` and ``int8-integer-only`` recipe stages: options (:mod:`.options`), calibration
and per-layer error (:mod:`.plan`), the rewrite (:mod:`.rewrite`, its integer-only handlers in
:mod:`.integer_only` and their Relax emitters in :mod:`.emit`), per-layer sensitivity switches
(:mod:`.layer_switch`) and the stage objects the recipe registry maps to (:mod:`.stage`)."""
