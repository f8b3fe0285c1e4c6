"""The weights file of an artifact, memory-mapped.

Format (``weights.bin``; the manifest's ``weights`` section is its index): the tensors ``main``
takes after the model's inputs (:mod:`edgecompile.lower.external_weights`), in that order, raw
little-endian, each at an offset that is a multiple of :data:`ALIGNMENT` (TVM refuses a tensor
whose data is not 64-byte aligned, and the kernels assume it); zero padding between them. The
section::

    {"file": "weights.bin", "bytes": N, "alignment": 64,
     "tensors": [{"dtype": "float32", "shape": [384, 1536], "offset": 0}, ...]}

The Python runtime maps the file copy-on-write (``MAP_PRIVATE``: DLPack cannot export a read-only
array; nothing writes to a weight, and a write could never reach the file) and hands each tensor
to the VM as a view of the mapping, with no copy. The pages are the page cache's: resident once,
shared by every process that maps the same file, and dropped by the kernel under memory pressure
instead of swapped. The native runner of device bundles does the same with ``mmap``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecompile.errors import ArtifactError
from edgecompile.runtime.manifest_schema import WEIGHTS_ALIGNMENT as ALIGNMENT
from edgecompile.runtime.manifest_schema import tensor_nbytes

FILE = "weights.bin"
__all__ = ["ALIGNMENT", "FILE", "map_weights"]


def map_weights(root: Path, section: dict) -> list[np.ndarray]:
    """Views of each weight tensor in the memory-mapped weights file (the section checked by
    :func:`edgecompile.runtime.manifest_schema.check_fields`)."""
    path = root / section["file"]
    if path.stat().st_size != section["bytes"]:
        raise ArtifactError(f"{path} holds {path.stat().st_size} bytes, the manifest says {section['bytes']}")
    if not section["bytes"]:  # nothing to map (mmap refuses an empty file)
        return [np.empty(t["shape"], np_dtype(t["dtype"])) for t in section["tensors"]]
    blob = np.memmap(path, dtype=np.uint8, mode="c")
    views = []
    for t in section["tensors"]:
        start = t["offset"]
        data = blob[start : start + tensor_nbytes(t)]
        views.append(data.view(np_dtype(t["dtype"])).reshape(t["shape"]))
    return views


def np_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)
