"""The IR floor: what every stage needs to read and rebuild a Relax graph — walking bindings
(:mod:`.walk`), op names and constants (:mod:`.ops`), attribute names shared between rewrites and
readers (:mod:`.attrs`), the numpy interpreter (:mod:`.interpret`), GELU matching
(:mod:`.gelu_match`), the energy count (:mod:`.energy`), running a module on this machine
(:mod:`.host`) and TVM's output capture (:mod:`.native_output`). It imports no stage."""
