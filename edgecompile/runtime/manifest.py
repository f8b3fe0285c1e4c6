"""The artifact manifest: its format, its canonical bytes, and its verification.

An artifact is a directory holding ``manifest.json`` and the files it lists with their SHA-256
(a directory in it, such as a Core ML ``model.mlpackage``, is listed file by file).
The manifest also carries ``manifest_sha256``: the digest of its own canonical JSON without that
field, so an edited manifest (a changed shape, a swapped checksum) is refused like an edited
library. This module is shared by the compiler (which writes) and the runtime (which reads); it
imports only the standard library.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgecompile.errors import ArtifactError

FORMAT = "edgecompile-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` but the manifest, keyed by its path relative to ``root``
    (``model.so``; ``model.mlpackage/Manifest.json`` for the files inside a package directory)."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST
    }


def canonical_bytes(manifest: dict) -> bytes:
    """Deterministic JSON bytes: sorted keys, fixed separators, trailing newline."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode()


def seal(manifest: dict) -> bytes:
    """Add ``manifest_sha256`` and return the bytes to write as manifest.json."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    body["manifest_sha256"] = hashlib.sha256(canonical_bytes(body)).hexdigest()
    return canonical_bytes(body)


def read_verified(artifact: str | Path) -> dict:
    """Read and verify an artifact's manifest and files; raise :class:`ArtifactError` if not sound."""
    root = Path(artifact)
    if not root.exists():
        raise ArtifactError(f"artifact not found: {root}")
    if not root.is_dir():
        raise ArtifactError(f"an artifact is a directory made by `edgecompile compile`, got a file: {root}")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"not an edgecompile artifact (no {MANIFEST}) or incomplete: {root}")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"corrupt {MANIFEST} in {root}: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mpath} is not an edgecompile manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"artifact format version {version} is not supported by this runtime (it reads version "
            f"{FORMAT_VERSION}); recompile the model with a matching edgecompile"
        )
    claimed = manifest.get("manifest_sha256")
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    if claimed != hashlib.sha256(canonical_bytes(body)).hexdigest():
        raise ArtifactError(f"{mpath} was modified after compile (its self-checksum does not match)")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{mpath} lists no files")
    for folder in sorted({name.split("/")[0] for name in files if "/" in name}):
        inside = (root / folder).rglob("*") if (root / folder).is_dir() else ()
        extra = sorted(q for q in (p.relative_to(root).as_posix() for p in inside if p.is_file()) if q not in files)
        if extra:
            raise ArtifactError(
                f"artifact directory {folder} holds files the manifest does not list ({extra[0]}"
                f"{', …' if len(extra) > 1 else ''}): it was modified after compile; recompile or restore it"
            )
    for name, digest in sorted(files.items()):
        fpath = root / name
        if not fpath.is_file():
            raise ArtifactError(f"artifact is incomplete: {name} is missing from {root}")
        actual = sha256_file(fpath)
        if actual != digest:
            raise ArtifactError(
                f"artifact file {name} was modified or corrupted (SHA-256 {actual[:12]}…, "
                f"manifest says {digest[:12]}…); recompile or restore it"
            )
    return manifest
