"""The Core ML backend: the Relax graph written as an ML Program with coremltools' MIL builder
(a sibling of :mod:`edgecompile.lower`, chosen by a target profile's ``runtime = "coreml"``)."""
