"""The standing bad-input suite: every way a user (or an attacker) can hand edgecompile something
wrong, each a case that asserts a clear error with the right exit code — never a traceback, a
crash, a lost file, a foreign library loaded or silently wrong output.

Shared here: the CLI runner, the one-error-line check, a tiny float model with a token-id input
(compiled once), keys, and the case count printed at the end of the run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from badinput_support import VOCAB, embed_model


def pytest_terminal_summary(terminalreporter):
    passed = [r for r in terminalreporter.stats.get("passed", []) if "tests/badinput/" in r.nodeid]
    failed = [r for r in terminalreporter.stats.get("failed", []) if "tests/badinput/" in r.nodeid]
    if passed or failed:
        terminalreporter.write_line(f"bad-input suite: {len(passed) + len(failed)} cases, {len(failed)} failed")


@pytest.fixture(scope="session")
def embed_onnx(tmp_path_factory) -> Path:
    return embed_model(tmp_path_factory.mktemp("embed") / "embed.onnx")


@pytest.fixture(scope="session")
def embed_artifact(embed_onnx, tmp_path_factory) -> Path:
    import edgecompile

    return edgecompile.compile(embed_onnx, "native", tmp_path_factory.mktemp("embed_art") / "art")


@pytest.fixture(scope="session")
def embed_feeds() -> dict:
    rng = np.random.default_rng(1)
    return {"ids": np.array([[1, 7, 0, VOCAB - 1]], np.int64), "x": rng.standard_normal((1, 4, 8)).astype(np.float32)}


@pytest.fixture
def art_copy(embed_artifact, tmp_path) -> Path:
    dest = tmp_path / "art"
    shutil.copytree(embed_artifact, dest)
    return dest


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> dict:
    """Two key pairs: ``a`` and ``b`` (private paths; ``a.pub``, ``b.pub`` beside them)."""
    from edgecompile.artifact.signing import generate_key

    d = tmp_path_factory.mktemp("keys")
    return {name: generate_key(d / name)[0] for name in ("a", "b")}


@pytest.fixture(scope="session")
def canary_lib(tmp_path_factory) -> tuple[Path, Path]:
    """A shared library whose constructor creates a marker file: if the marker exists, it was loaded."""
    d = tmp_path_factory.mktemp("canary")
    marker = d / "LOADED"
    src = d / "evil.c"
    src.write_text(
        "#include <stdio.h>\n__attribute__((constructor)) static void hit(void) {\n"
        f'  FILE* f = fopen("{marker}", "w");\n  if (f) fclose(f);\n}}\n'
    )
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler to build the canary library")
    lib = d / "evil.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib, marker
