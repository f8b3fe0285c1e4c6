"""Write an artifact directory: the library and a sealed ``manifest.json``.

The manifest holds no time stamps and no absolute paths, so compiling the same model twice gives
byte-identical artifacts. The directory is written next to its destination and moved into place,
so an interrupted compile never leaves a half-written artifact behind.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from edgecompile.errors import ArtifactError
from edgecompile.runtime.manifest import FORMAT, FORMAT_VERSION, MANIFEST, Manifest, file_digests, seal
from edgecompile.version import __version__


def prepare_output(out_dir: Path) -> Path:
    """A fresh staging directory beside ``out_dir``; refuses to replace a non-artifact directory."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ArtifactError(f"output path exists and is a file: {out_dir}")
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
            raise ArtifactError(
                f"output directory {out_dir} exists and is not an edgecompile artifact; choose another -o"
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))


def finish(staging: Path, out_dir: Path, manifest: Manifest | dict) -> Path:
    """Checksum the staged files, seal the manifest and move the artifact into ``out_dir``.

    ``manifest`` is a :class:`~edgecompile.runtime.manifest.Manifest` (a plain dict of the same keys
    is still taken while callers move over)."""
    import tvm

    body = manifest.to_json() if isinstance(manifest, Manifest) else manifest
    files = file_digests(staging)
    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "edgecompile_version": __version__,
        "tvm_version": tvm.__version__,
        **body,
        "files": files,
    }
    (staging / MANIFEST).write_bytes(seal(full))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir


def constant_bytes(mod) -> int:
    """Bytes of the distinct constant tensors (the weights) the Relax functions of ``mod`` hold."""
    import numpy as np
    from tvm import relax
    from tvm.ir.expr import Constant

    seen: dict = {}  # Constant node -> bytes (TVM objects hash by identity)

    def visit(expr) -> None:
        if isinstance(expr, Constant) and hasattr(expr.value, "shape") and expr not in seen:
            data = expr.value
            seen[expr] = int(np.prod(data.shape, dtype=np.int64)) * np.dtype(str(data.dtype)).itemsize

    for _gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return sum(seen.values())
