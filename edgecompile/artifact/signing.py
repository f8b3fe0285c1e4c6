"""Make Ed25519 keys and sign artifacts (the compiler side; the runtime only verifies).

``edgecompile keygen NAME`` writes ``NAME`` (the private key, PKCS#8 PEM, readable by its owner
only) and ``NAME.pub`` (the public key to give the devices). ``compile --sign NAME``,
``edgecompile sign ARTIFACT --key NAME`` and ``package --sign NAME`` write ``manifest.sig`` beside
the manifest: a signature over its exact bytes (:mod:`edgecompile.runtime.signature`).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgecompile.errors import SignatureError
from edgecompile.runtime.manifest import MANIFEST, read_verified
from edgecompile.runtime.signature import SIGNATURE, key_id, signature_record


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError as e:  # a dependency of the package; only a broken install lacks it
        raise SignatureError("signing needs the 'cryptography' package: pip install cryptography") from e
    return serialization, Ed25519PrivateKey


def generate_key(path: Path) -> tuple[Path, Path, str]:
    """Write a new private key to ``path`` (mode 0600) and its public key to ``path.pub``; refuses to
    overwrite either. Returns both paths and the key id."""
    serialization, private_cls = _crypto()
    path = Path(path)
    pub = path.with_name(path.name + ".pub")
    for p in (path, pub):
        if p.exists() or p.is_symlink():
            raise SignatureError(f"{p} exists; keygen never overwrites a key (choose another name)")
    key = private_cls.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return path, pub, key_id(raw)


def load_private_key(path: Path):
    """The Ed25519 private key in the PEM file ``path``; anything else is a :class:`SignatureError`."""
    serialization, private_cls = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as e:
        raise SignatureError(f"cannot read signing key {path}: {e.strerror or e}") from e
    except (ValueError, TypeError) as e:
        raise SignatureError(f"{path} is not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, private_cls):
        raise SignatureError(f"{path} is not an Ed25519 key (make one with `edgecompile keygen`)")
    return key


def sign_directory(root: Path, key) -> str:
    """Write ``root/manifest.sig`` signing ``root/manifest.json`` with ``key``; returns the key id."""
    serialization, _ = _crypto()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    (root / SIGNATURE).write_bytes(signature_record(raw, key.sign((root / MANIFEST).read_bytes())))
    return key_id(raw)


def sign_artifact(artifact: Path, key_path: Path) -> str:
    """Sign an existing artifact (verified first: one never signs a tampered artifact)."""
    key = load_private_key(key_path)
    read_verified(artifact)
    return sign_directory(Path(artifact), key)
