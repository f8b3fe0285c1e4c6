"""Write the weights file of an artifact (format: :mod:`edgecompile.runtime.weights`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecompile.runtime.weights import ALIGNMENT, FILE


def write_weights(arrays: list[np.ndarray], out_dir: Path) -> dict | None:
    """Write ``arrays`` into ``out_dir/weights.bin``; returns the manifest's ``weights`` section
    (None, and no file, when there are none)."""
    if not arrays:
        return None
    tensors, offset = [], 0
    with open(out_dir / FILE, "wb") as f:
        for a in arrays:
            pad = -offset % ALIGNMENT
            f.write(b"\0" * pad)
            offset += pad
            data = np.ascontiguousarray(a)  # native order: x86 and aarch64 are little-endian
            f.write(data.reshape(-1).view(np.uint8).data)
            tensors.append({"dtype": str(a.dtype), "shape": [int(d) for d in a.shape], "offset": offset})
            offset += data.nbytes
    return {"file": FILE, "bytes": offset, "alignment": ALIGNMENT, "tensors": tensors}
