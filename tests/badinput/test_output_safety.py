"""``compile -o`` and ``package -o`` never delete a user's files: only an empty folder or a clean
artifact (bundle) is replaced; anything else is refused and left byte for byte as it was. Ctrl-C
exits 130 and leaves the old artifact intact."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from badinput_support import cli, one_error_line


def snapshot(root) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def compile_to(onnx_path, out, *extra):
    return cli("compile", onnx_path, "-o", out, *extra)


FOLDERS = {
    "web app with a manifest.json": {"manifest.json": b'{"name": "app"}', "index.html": b"<html>", "icons/a.png": b"x"},
    "json manifest of another format": {"manifest.json": b'{"format": "other", "files": {}}', "data.bin": b"1"},
    "a folder of notes": {"NOTES.md": b"mine"},
    "a hidden file": {".env": b"SECRET=1"},
}


@pytest.mark.parametrize("case", sorted(FOLDERS))
def test_a_folder_that_is_not_an_artifact_is_never_replaced(embed_onnx, tmp_path, case):
    out = tmp_path / "out"
    for name, data in FOLDERS[case].items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    before = snapshot(out)
    for extra in ([], ["--force"]):
        assert "not an edgecompile artifact" in one_error_line(compile_to(embed_onnx, out, *extra))
        assert snapshot(out) == before


@pytest.mark.parametrize("extra", ["NOTES.md", "sub/notes.txt", "empty_dir/"])
def test_an_artifact_with_unlisted_files_needs_force(embed_onnx, embed_artifact, tmp_path, extra):
    out = tmp_path / "out"
    shutil.copytree(embed_artifact, out)
    if extra.endswith("/"):
        (out / extra).mkdir()
    else:
        (out / extra).parent.mkdir(parents=True, exist_ok=True)
        (out / extra).write_text("mine")
    before = snapshot(out)
    assert "--force" in one_error_line(compile_to(embed_onnx, out))
    assert snapshot(out) == before
    assert compile_to(embed_onnx, out, "--force").exit_code == 0
    assert not (out / extra.rstrip("/")).exists() and (out / "manifest.json").is_file()


def test_a_clean_artifact_and_an_empty_folder_are_replaced(embed_onnx, embed_artifact, tmp_path):
    shutil.copytree(embed_artifact, tmp_path / "art")
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "art", tmp_path / "empty"):
        r = compile_to(embed_onnx, out)
        assert r.exit_code == 0, r.output
        assert snapshot(out) == snapshot(embed_artifact)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging or old folders left behind"


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_output_that_is_a_file_or_a_link_is_refused(embed_onnx, tmp_path, kind):
    out = tmp_path / "out"
    target = tmp_path / "real"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    if kind == "file":
        out.write_text("mine")
    else:
        out.symlink_to(target)
    one_error_line(compile_to(embed_onnx, out))
    assert (target / "keep.txt").read_text() == "mine"
    assert out.is_symlink() or out.read_text() == "mine"


def test_a_failed_compile_leaves_the_old_artifact(embed_onnx, embed_artifact, tmp_path):
    out = tmp_path / "art"
    shutil.copytree(embed_artifact, out)
    before = snapshot(out)
    one_error_line(compile_to(embed_onnx, out, "--recipe", "int8", "--calib", tmp_path / "missing.npz"))
    assert snapshot(out) == before


def test_package_never_replaces_a_folder_that_is_not_a_clean_bundle(embed_artifact, tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "bundle.json").write_text('{"files": [{"path": "run_model"}]}')
    (out / "mine.txt").write_text("mine")
    assert "--force" in one_error_line(cli("package", embed_artifact, "-o", out))
    assert (out / "mine.txt").read_text() == "mine"
    (out / "bundle.json").unlink()
    assert "not a bundle" in one_error_line(cli("package", embed_artifact, "-o", out))
    assert (out / "mine.txt").read_text() == "mine"


def test_ctrl_c_exits_130_and_keeps_the_old_artifact(embed_onnx, embed_artifact, tmp_path):
    out = tmp_path / "art"
    shutil.copytree(embed_artifact, out)
    before = snapshot(out)
    calib = tmp_path / "calib.npz"
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(calib, ids=rng.integers(0, 50, (64, 1, 4)), x=rng.standard_normal((64, 1, 4, 8)).astype(np.float32))
    cmd = [sys.executable, "-m", "edgecompile", "compile", str(embed_onnx), "-o", str(out), "--recipe", "int8"]
    proc = subprocess.Popen([*cmd, "--calib", str(calib)], stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".art.") for p in tmp_path.iterdir()):
        time.sleep(0.05)  # wait for the compile to start writing (its staging folder appears)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".art.")], "staging folder left behind"


def _denied(*_args, **_kwargs):
    raise PermissionError(13, "Permission denied", "/readonly/place")


def test_a_folder_it_cannot_write_is_exit_2_not_a_bug(embed_onnx, tmp_path, monkeypatch):
    """Read-only folders (simulated: the tests may run as root, for whom chmod changes nothing)."""
    import tempfile

    monkeypatch.setattr(tempfile, "mkdtemp", _denied)
    line = one_error_line(compile_to(embed_onnx, tmp_path / "out"))
    assert "cannot write the artifact" in line and "Permission denied" in line


def test_run_output_it_cannot_write_is_exit_2_not_a_bug(embed_artifact, embed_feeds, tmp_path, monkeypatch):
    import numpy as np

    np.savez(tmp_path / "in.npz", **embed_feeds)
    monkeypatch.setattr(np, "savez", _denied)
    line = one_error_line(cli("run", embed_artifact, "--input", tmp_path / "in.npz", "--output", tmp_path / "o.npz"))
    assert "/readonly/place: Permission denied" in line
