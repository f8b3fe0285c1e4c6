"""Write an artifact directory: the library and a sealed ``manifest.json``.

The manifest holds no time stamps and no absolute paths, so compiling the same model twice gives
byte-identical artifacts. The directory is written next to its destination and moved into place,
so an interrupted compile never leaves a half-written artifact behind, and ``-o`` never deletes a
user's files (:func:`check_replaceable`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from edgecompile.errors import ArtifactError
from edgecompile.runtime.manifest import FORMAT, FORMAT_VERSION, MANIFEST, RANGED_VERSION, Manifest, file_digests, seal
from edgecompile.runtime.signature import SIGNATURE
from edgecompile.version import __version__


def prepare_output(out_dir: Path, force: bool = False) -> Path:
    """A fresh staging directory beside ``out_dir``, after checking ``out_dir`` may be replaced
    (:func:`check_replaceable`)."""
    out_dir = Path(out_dir)
    check_replaceable(out_dir, force)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as e:
        raise ArtifactError(f"cannot write the artifact next to {out_dir}: {e.strerror or e}") from e


def check_replaceable(out_dir: Path, force: bool = False, listing=None, kind: str = "an edgecompile artifact") -> None:
    """Refuse an output path a compile (or ``package``) must not replace.

    Replaced are only: nothing, an empty directory, or ``kind`` holding exactly the files
    ``listing(out_dir)`` names (default: an artifact's manifest, plus its signature). One holding other
    files too (a user's notes) is replaced only with ``force``; a non-empty directory that is not ``kind``
    (``listing`` returns None), a file or a symbolic link never is. Nothing is deleted before the new
    directory is complete (:func:`swap_into_place`)."""
    if out_dir.is_symlink():
        raise ArtifactError(f"output path {out_dir} is a symbolic link; give the real directory")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ArtifactError(f"output path exists and is a file: {out_dir}")
    if not any(out_dir.iterdir()):
        return
    listed = (listing or _artifact_listing)(out_dir)
    if listed is None:
        raise ArtifactError(
            f"output directory {out_dir} exists, is not empty and is not {kind}; choose another -o "
            "(nothing was changed)"
        )
    extra = unlisted_files(out_dir, listed)
    if extra and not force:
        shown = ", ".join(extra[:3]) + (", …" if len(extra) > 3 else "")
        raise ArtifactError(
            f"output directory {out_dir} is {kind} but also holds files it does not list "
            f"({shown}); move them out, or pass --force to replace the directory with them (nothing was changed)"
        )


def swap_into_place(staging: Path, out_dir: Path) -> None:
    """Move the complete ``staging`` directory to ``out_dir``; the old ``out_dir`` (already checked
    replaceable) is moved aside first and deleted only once the new one is in place."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent)) / "previous"
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old.parent)


def _artifact_listing(root: Path) -> set[str] | None:
    """The paths an edgecompile artifact at ``root`` consists of, or None if ``root`` is not one."""
    try:
        manifest = json.loads((root / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) for k in files):
        return None
    return {*files, MANIFEST, SIGNATURE}


def unlisted_files(root: Path, listed: set[str]) -> list[str]:
    """Everything under ``root`` (files, links, empty folders) that ``listed`` does not name."""
    folders = {"/".join(n.split("/")[:i]) for n in listed for i in range(1, n.count("/") + 1)}
    extra = []
    for dirpath, dirnames, filenames in os.walk(root):  # never follows links
        rel = Path(dirpath).relative_to(root)
        for name in dirnames + filenames:
            q = (rel / name).as_posix()
            if q not in listed and q not in folders:
                extra.append(q)
    return sorted(extra)


def finish(
    staging: Path, out_dir: Path, manifest: Manifest | dict, force: bool = False, sign_key: object = None
) -> Path:
    """Checksum the staged files, seal the manifest (and sign it with ``sign_key``, a private key
    from :func:`edgecompile.artifact.signing.load_private_key`) and move the artifact into ``out_dir``.

    The old artifact at ``out_dir`` is checked again (the compile took a while), moved aside, and
    deleted only once the new one is in place. ``manifest`` is a
    :class:`~edgecompile.runtime.manifest.Manifest` (or a plain dict of the same keys)."""
    import tvm

    body = manifest.to_json() if isinstance(manifest, Manifest) else manifest
    files = file_digests(staging)
    full = {
        "format": FORMAT,
        # a ranged artifact (several builds, one weights file) is version 3: older runtimes refuse it
        "format_version": RANGED_VERSION if "ranged" in body else FORMAT_VERSION,
        "edgecompile_version": __version__,
        "tvm_version": tvm.__version__,
        **body,
        "files": files,
    }
    (staging / MANIFEST).write_bytes(seal(full))
    if sign_key is not None:
        from edgecompile.artifact.signing import sign_directory

        sign_directory(staging, sign_key)
    check_replaceable(out_dir, force)
    swap_into_place(staging, out_dir)
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
