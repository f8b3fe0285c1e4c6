"""The CLI's signing commands (``keygen``, ``sign``) and how run/bench/package find trusted keys.

Trusted public keys come from ``--trusted-key PUB`` (repeatable) and from the environment variable
``EDGECOMPILE_TRUSTED_KEYS`` (paths separated by ``:``), which lets a device operator enforce
signatures for every run. Any trusted key makes a signature required; ``--require-signature``
without one is an error (nothing could verify).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from edgecompile.cli.views import out
from edgecompile.errors import SignatureError

TRUSTED_ENV = "EDGECOMPILE_TRUSTED_KEYS"

TrustedKeyOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--trusted-key",
        help=f"Ed25519 public key (.pub from `edgecompile keygen`) the artifact must be signed by; repeatable. "
        f"Also read from ${TRUSTED_ENV}.",
    ),
]
RequireSignatureOption = Annotated[
    bool, typer.Option("--require-signature", help="Refuse an artifact not signed by a trusted key.")
]


def trusted_keys(keys: list[Path] | None, require: bool) -> list[bytes] | None:
    """The raw trusted public keys, or None when no signature is asked for."""
    from edgecompile.runtime.signature import read_public_key

    paths = list(keys or []) + [Path(p) for p in os.environ.get(TRUSTED_ENV, "").split(os.pathsep) if p]
    if not paths and require:
        raise SignatureError(f"--require-signature needs a public key: --trusted-key KEY.pub (or ${TRUSTED_ENV})")
    return [read_public_key(p) for p in paths] if paths else None


def register(app: typer.Typer, handle_errors) -> None:
    """Add ``keygen`` and ``sign`` to ``app``, wrapped in the CLI's error handling."""

    @app.command("keygen")
    @handle_errors
    def keygen_cmd(
        name: Annotated[Path, typer.Argument(help="Private key file to write; the public key goes to NAME.pub.")],
    ) -> None:
        """Make an Ed25519 signing key pair (never overwrites a key)."""
        from edgecompile.artifact.signing import generate_key

        private, public, kid = generate_key(name)
        out.print(
            f"wrote {private} (private: keep it secret) and {public} (public: give it to the devices); key id {kid}",
            highlight=False,
        )

    @app.command("sign")
    @handle_errors
    def sign_cmd(
        artifact: Annotated[Path, typer.Argument(help="Artifact directory made by `edgecompile compile`.")],
        key: Annotated[Path, typer.Option("--key", "-k", help="Private key from `edgecompile keygen`.")],
    ) -> None:
        """Sign ARTIFACT (verified first) with KEY: writes manifest.sig beside its manifest."""
        from edgecompile.artifact.signing import sign_artifact

        kid = sign_artifact(artifact, key)
        out.print(f"signed {artifact} with key {kid} ({artifact}/manifest.sig)", highlight=False)
