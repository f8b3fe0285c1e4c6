"""The weights of a ranged artifact's builds, each distinct array stored once."""

from __future__ import annotations

import hashlib

import numpy as np


class SharedWeights:
    """The distinct weight arrays of all builds (by dtype, shape and bytes), gathered build by build
    so that only one copy of each stays in memory while the next build compiles."""

    def __init__(self):
        self.arrays: list[np.ndarray] = []
        self._index: dict[tuple, int] = {}

    def add(self, arrays: list[np.ndarray]) -> list[int]:
        """The indices of ``arrays`` (a build's weights, in its order) among the distinct ones."""
        ids = []
        for a in arrays:
            a = np.ascontiguousarray(a)
            key = (str(a.dtype), a.shape, hashlib.sha256(a.view(np.uint8).reshape(-1)).digest())
            if key not in self._index:
                self._index[key] = len(self.arrays)
                self.arrays.append(a)
            ids.append(self._index[key])
        return ids
