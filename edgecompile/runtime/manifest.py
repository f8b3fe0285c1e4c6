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
from dataclasses import dataclass, field, fields
from pathlib import Path

from edgecompile.errors import ArtifactError, SignatureError
from edgecompile.runtime.manifest_schema import check_fields, check_name, check_regular

FORMAT = "edgecompile-artifact"
FORMAT_VERSION = 2  # 2: weights in weights.bin (the manifest's "weights" section), not in the library
RANGED_VERSION = 3  # 3: a ranged artifact (the "ranged" section: several builds sharing weights.bin)
READS_VERSIONS = (1, 2, 3)  # a version-1 artifact has no weights section and loads as before
MANIFEST = "manifest.json"

# The order a compile writes the keys in (the sealed bytes sort them anyway): the typed fields of
# :class:`Manifest` with the backend sections in their places; other sections follow in insertion order.
KEY_ORDER = (
    "target",
    "recipe",
    "source",
    "inputs",
    "outputs",
    "library",
    "linker",
    "link_command",
    "device_code",  # TVM CUDA targets: the prebuilt fatbins (None elsewhere on TVM targets)
    "tuning",
    "quantization",
    "lowrank",
    "hash_attention",
    "float_ops",
    "energy",
    "weights_bytes",  # TVM targets: bytes of the model's constants before lowering
    "weights",  # TVM targets but OpenCL: the index of weights.bin (runtime/weights.py)
    "memory",  # TVM targets: weights, planned arena, outputs, kernel scratch, library bytes
    "kernels",  # TVM targets: per kernel its symbol, schedule rule, calls per run, estimated ops
    "coreml",  # Core ML targets: the package's section
    "ranged",  # ranged artifacts: groups, dims, output axes and builds (runtime/buckets.py)
)


@dataclass
class Manifest:
    """What a compile writes into ``manifest.json``, before :func:`edgecompile.artifact.package.finish`
    adds the envelope (``format``, ``format_version``, the versions, ``files``) and seals it.

    The fields both backends write are typed; ``extra`` holds a backend's own sections (TVM:
    ``device_code`` and ``weights_bytes``; Core ML: ``coreml``). :meth:`to_json` gives the dict a
    compile wrote before this class existed, key for key; :func:`read_verified` still returns the
    sealed dict, which :meth:`from_json` reads back (envelope keys land in ``extra``)."""

    target: dict
    recipe: dict
    source: dict
    inputs: list[dict]
    outputs: list[dict]
    library: str
    linker: str | None = None
    link_command: str | None = None
    tuning: dict | None = None
    quantization: dict | None = None
    lowrank: dict | None = None
    hash_attention: dict | None = None
    float_ops: list[dict] | None = None
    energy: dict | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The manifest as a JSON-ready dict, keys in :data:`KEY_ORDER` (unknown sections last)."""
        body = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        clash = sorted(body.keys() & self.extra.keys())
        if clash:
            raise ValueError(f"manifest sections {clash} are typed fields, not extra sections")
        body.update(self.extra)
        rank = {k: i for i, k in enumerate(KEY_ORDER)}
        return dict(sorted(body.items(), key=lambda kv: rank.get(kv[0], len(rank))))

    @classmethod
    def describing(cls, imported, recipe, profile, **backend) -> Manifest:
        """The manifest of ``imported`` (the frontend's model: ``source``, ``inputs``, ``outputs``
        specs) compiled with ``recipe`` for ``profile``; ``backend`` holds the backend's fields."""
        return cls(
            target=profile.to_json(),
            recipe=recipe.to_json(),
            source=imported.source,
            inputs=[s.to_json() for s in imported.inputs],
            outputs=[s.to_json() for s in imported.outputs],
            **backend,
        )

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        """A manifest dict (e.g. :func:`read_verified`'s) as a :class:`Manifest`; keys that are not
        typed fields go to ``extra``."""
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in data.items() if k in names}, extra={k: v for k, v in data.items() if k not in names}
        )


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


def read_verified(artifact: str | Path, trusted_keys: list[bytes] | None = None) -> dict:
    """Read and verify an artifact's manifest and files; raise :class:`ArtifactError` if not sound.

    With ``trusted_keys`` (raw Ed25519 public keys; see :mod:`edgecompile.runtime.signature`) the
    manifest must also carry a signature by one of them, checked before anything else is read."""
    from edgecompile.runtime.signature import verify_manifest

    root = Path(artifact)
    raw, mpath = _read_manifest(root)
    if trusted_keys is not None:
        if not trusted_keys:
            raise SignatureError("a signature is required but no trusted public key was given")
        verify_manifest(root, raw, list(trusted_keys))
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError(f"corrupt {MANIFEST} in {root}: {e}") from e
    _check_header(manifest, mpath)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files or not all(isinstance(d, str) for d in files.values()):
        raise ArtifactError(f"{mpath} lists no files")
    check_fields(manifest, mpath)
    _check_unlisted(root, files)
    _check_digests(root, files)
    return manifest


def _read_manifest(root: Path) -> tuple[bytes, Path]:
    """The bytes of the artifact directory ``root``'s ``manifest.json`` and its path."""
    if not root.exists():
        raise ArtifactError(f"artifact not found: {root}")
    if not root.is_dir():
        raise ArtifactError(f"an artifact is a directory made by `edgecompile compile`, got a file: {root}")
    mpath = root / MANIFEST
    if mpath.is_symlink():
        raise ArtifactError(f"{mpath} is a symbolic link: refused")
    if not mpath.is_file():
        raise ArtifactError(f"not an edgecompile artifact (no {MANIFEST}) or incomplete: {root}")
    try:
        return mpath.read_bytes(), mpath
    except OSError as e:
        raise ArtifactError(f"cannot read {mpath}: {e.strerror or e}") from e


def _check_header(manifest, mpath: Path) -> None:
    """An edgecompile manifest of the version this runtime reads, its self-checksum intact."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mpath} is not an edgecompile manifest")
    version = manifest.get("format_version")
    if version not in READS_VERSIONS:
        raise ArtifactError(
            f"artifact format version {version} is not supported by this runtime (it reads versions "
            f"{', '.join(map(str, READS_VERSIONS))}); recompile the model with a matching edgecompile"
        )
    claimed = manifest.get("manifest_sha256")
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    if claimed != hashlib.sha256(canonical_bytes(body)).hexdigest():
        raise ArtifactError(f"{mpath} was modified after compile (its self-checksum does not match)")


def _check_unlisted(root: Path, files: dict) -> None:
    """No file in a listed directory (a Core ML package) that the manifest does not list."""
    for folder in sorted({name.split("/")[0] for name in files if "/" in name}):
        inside = (root / folder).rglob("*") if (root / folder).is_dir() else ()
        names = (p.relative_to(root).as_posix() for p in inside if p.is_file() or p.is_symlink())
        extra = sorted(q for q in names if q not in files)
        if extra:
            raise ArtifactError(
                f"artifact directory {folder} holds files the manifest does not list ({extra[0]}"
                f"{', …' if len(extra) > 1 else ''}): it was modified after compile; recompile or restore it"
            )


def _check_digests(root: Path, files: dict) -> None:
    """Every listed file present with the SHA-256 the manifest records."""
    for name, digest in sorted(files.items()):
        fpath = check_regular(root, check_name(name, "manifest files"))
        actual = sha256_file(fpath)
        if actual != digest:
            raise ArtifactError(
                f"artifact file {name} was modified or corrupted (SHA-256 {actual[:12]}…, "
                f"manifest says {digest[:12]}…); recompile or restore it"
            )
