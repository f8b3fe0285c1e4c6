"""Artifact signatures: an Ed25519 signature over the exact bytes of ``manifest.json``.

What each check protects against (README, "Signed artifacts"):

- the manifest's checksums (every file's SHA-256, and the manifest's own) catch corruption and
  careless edits, but anyone can recompute them after changing a file: they prove nothing about
  who made the artifact;
- the signature (``manifest.sig``, written by ``compile --sign KEY`` / ``edgecompile sign``) proves
  the manifest — and through its SHA-256 list every file — is the one the key's holder sealed. A
  runtime given trusted public keys refuses an artifact that is unsigned, signed by another key,
  or changed by one byte anywhere.

Verification uses ``cryptography`` (OpenSSL) where installed, else the plain-Python verifier in
:mod:`edgecompile.runtime.ed25519`, so a device bundle verifies without extra packages. Keys are
PEM files: PKCS#8 private keys, SubjectPublicKeyInfo public keys (what ``edgecompile keygen``
writes, and what ``openssl genpkey -algorithm ed25519`` makes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path

from edgecompile.errors import SignatureError
from edgecompile.runtime import ed25519

SIGNATURE = "manifest.sig"
ALGORITHM = "ed25519"
# DER SubjectPublicKeyInfo of an Ed25519 key: this 12-byte header, then the 32 raw key bytes.
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def key_id(public_key: bytes) -> str:
    """A short name for a raw public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def read_public_key(source: str | Path | bytes) -> bytes:
    """The 32 raw bytes of an Ed25519 public key from a PEM file (or its bytes) or 32 raw bytes."""
    if isinstance(source, bytes) and len(source) == 32:
        return source
    if isinstance(source, (str, Path)):
        try:
            source = Path(source).read_bytes()
        except OSError as e:
            raise SignatureError(f"cannot read public key {source}: {e.strerror or e}") from e
    text = source.decode("ascii", "replace")
    body = "".join(line for line in text.strip().splitlines() if not line.startswith("-----"))
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        der = b""
    if "BEGIN PUBLIC KEY" not in text or len(der) != 44 or not der.startswith(_SPKI_PREFIX):
        raise SignatureError("not an Ed25519 public key (a PEM 'PUBLIC KEY' file as `edgecompile keygen` writes)")
    return der[len(_SPKI_PREFIX) :]


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Ed25519 verification with ``cryptography`` where installed, else :mod:`edgecompile.runtime.ed25519`."""
    if os.environ.get("EDGECOMPILE_PURE_ED25519") != "1":
        try:
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        except ImportError:
            pass
        else:
            try:
                Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
                return True
            except (InvalidSignature, ValueError):
                return False
    return ed25519.verify(public_key, signature, message)


def signature_record(public_key: bytes, signature: bytes) -> bytes:
    """The bytes of ``manifest.sig`` for ``signature`` made with the key whose public half is given."""
    body = {"algorithm": ALGORITHM, "key_id": key_id(public_key), "signature": base64.b64encode(signature).decode()}
    return _record_bytes(body)


def _record_bytes(record: dict) -> bytes:
    """A signature record's canonical bytes: the only form :func:`read_signature` accepts."""
    if not isinstance(record, dict) or set(record) != {"algorithm", "key_id", "signature"}:
        raise ValueError("a signature record has exactly algorithm, key_id and signature")
    canonical = dict(record, signature=base64.b64encode(base64.b64decode(record["signature"], validate=True)).decode())
    return (json.dumps(canonical, sort_keys=True, indent=2) + "\n").encode()


def read_signature(root: Path) -> dict | None:
    """The parsed ``manifest.sig`` of artifact ``root`` (None when unsigned); malformed is an error."""
    path = root / SIGNATURE
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_file():
        raise SignatureError(f"{path} is not a regular file: refused")
    try:
        raw = path.read_bytes()
        record = json.loads(raw)
        sig = base64.b64decode(record["signature"], validate=True)
        ok = record["algorithm"] == ALGORITHM and isinstance(record["key_id"], str) and len(sig) == 64
        # only the exact bytes signing writes: base64 ignores its padding bits and JSON its layout,
        # so without this a changed file could still carry the same signature
        ok = ok and raw == _record_bytes(record)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error):
        ok = False
    if not ok:
        raise SignatureError(f"{path} is malformed: the artifact's signature cannot be read")
    return {**record, "signature": sig}


def verify_manifest(root: Path, manifest_bytes: bytes, trusted: list[bytes]) -> str:
    """Check that ``manifest_bytes`` (artifact ``root``'s manifest) carries a valid signature by one
    of the ``trusted`` raw public keys; return that key's id or raise :class:`SignatureError`."""
    record = read_signature(root)
    if record is None:
        raise SignatureError(f"{root} is not signed, and a signature is required (sign it: edgecompile sign)")
    ids = {key_id(k): k for k in trusted}
    key = ids.get(record["key_id"])
    if key is None:
        raise SignatureError(
            f"{root} is signed by key {record['key_id']}, which is not among the trusted keys ({', '.join(ids)})"
        )
    if not verify(key, record["signature"], manifest_bytes):
        raise SignatureError(f"{root}: the signature does not verify: the manifest was changed after signing")
    return record["key_id"]
