"""Lowering: Relax module + target profile -> exported library (see :mod:`edgecompile.lower.build`)."""
