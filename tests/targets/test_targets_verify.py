"""`edgecompile targets` says what this machine verifies of each target, from what is installed."""

from __future__ import annotations

import json
import subprocess

from edgecompile.runtime.hostinfo import cpu_flags
from edgecompile.targets import get_profile, list_profiles
from edgecompile.targets.verify import verification


def test_every_target_has_a_verification_level():
    r = subprocess.run(["edgecompile", "targets", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    listed = {p["name"]: p["verified_here"] for p in json.loads(r.stdout)}
    assert set(listed) == {p.name for p in list_profiles()}
    levels = ("runs", "runs (emulated", "builds", "needs ")
    assert all(v.startswith(levels) for v in listed.values()), listed
    assert listed["native"] == "runs"
    avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
    if avx512 <= cpu_flags():
        assert listed["x86_64-avx512"] == "runs"
    else:
        assert listed["x86_64-avx512"].startswith("builds (this CPU lacks")
    # the test set-up installs the aarch64 cross compiler: the library links here
    assert listed["aarch64-linux"] in ("builds", "runs (emulated, qemu)")
    # no NDK clang here: Android gets objects and the link command
    assert listed["android-arm64"] == "builds objects (no cross linker)"


def test_levels_follow_the_tools_found(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing installed
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.setenv("EDGECOMPILE_AARCH64_SYSROOT", str(tmp_path / "none"))
    assert verification(get_profile("cuda-sm90")) == "needs nvcc (CUDA toolkit) to build"
    assert verification(get_profile("aarch64-linux")) == "builds objects (no cross linker)"
    for tool in ("nvcc", "aarch64-linux-gnu-gcc", "qemu-aarch64"):
        (tmp_path / tool).write_text("#!/bin/sh\n")
        (tmp_path / tool).chmod(0o755)
    assert verification(get_profile("cuda-sm90")).startswith(("builds (fatbin", "runs"))
    assert verification(get_profile("aarch64-linux")) == "builds"  # qemu but no sysroot
    sysroot = tmp_path / "sysroot"
    (sysroot / "usr" / "bin").mkdir(parents=True)
    monkeypatch.setenv("EDGECOMPILE_AARCH64_SYSROOT", str(sysroot))
    assert verification(get_profile("aarch64-linux")) == "runs (emulated, qemu)"
