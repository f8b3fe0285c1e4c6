"""The cross-compiled aarch64 artifacts run for real, under user-mode emulation: ``qemu-aarch64`` runs
Debian's arm64 python3.11 with the aarch64 wheels of TVM and numpy (the sysroot that
scripts/aarch64_sysroot.sh builds, in runtime-only mode), and our runtime loads the artifacts there.
Their outputs are compared with the x86 build's on the same inputs: integer-only recipes bit for bit
(their float outputs are int8 times the output scale, so equal bits are expected), fp32 within
``REL_TOL`` of the output's range: its float kernels round differently on any two CPUs (the x86-64
baseline build differs from the native one in as many elements as the aarch64 build does; measured
max 1.3e-7 of the range). int8 with float LayerNorm and softmax within ``INT8_TOL``: a float that
rounds differently can land on the other side of an int8 rounding boundary, which moves that value
by one quantization step downstream, and the float LayerNorm after it spreads that over the whole
row (seen on an AVX2 Zen 3 host: max 1.3e-3 of the range, half the values beyond ``REL_TOL``).
Emulated timings are not device latency and are not reported.

The hardware capabilities the runtime checks come from the auxiliary vector (``/proc/cpuinfo`` is the
x86 host's under qemu-user), tested here with a fabricated vector and, end to end, by a CPU without
dot-product refusing a dotprod artifact.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import EXAMPLE_ONNX, EXAMPLE_SHAPES, REL_TOL, ROOT, assert_close
from test_targets import elf_machine

import edgecompile
from edgecompile.runtime import hostinfo

SYSROOT = Path(os.environ.get("EDGECOMPILE_AARCH64_SYSROOT", ROOT / ".cache" / "aarch64-sysroot"))
SETUP = "run scripts/test.sh (it installs qemu-user and builds the sysroot with scripts/aarch64_sysroot.sh)"
CALIB = EXAMPLE_ONNX.parent / "tiny_bert_calib.npz"
EM_AARCH64 = 183  # ELF e_machine

# aarch64 Linux with the dot-product extension: the int8 GEMMs become sdot kernels. (android-arm64 has
# the same features but links only with the NDK's clang.) qemu-aarch64's default CPU ("max") has it.
DOTPROD_PROFILE = """\
name = "aarch64-linux-dotprod"
description = "64-bit ARM Linux with NEON and dot-product (ARMv8.2-A)"
runtime = "tvm"
arch = "aarch64"
cpu_features = ["asimd", "asimddp"]
cross_cc = ["aarch64-linux-gnu-gcc"]

[tvm]
kind = "llvm"
mtriple = "aarch64-linux-gnu"
mattr = ["+neon", "+dotprod"]
"""

# Runs inside the emulator: loads each artifact with edgecompile.runtime, runs every sample, saves the
# outputs as "<artifact>/<sample>/<output>" and prints what machine it ran on.
RUNNER = """\
import json, platform, sys
from pathlib import Path
import numpy as np
from edgecompile.runtime.hostinfo import cpu_flags
from edgecompile.runtime import load

data = np.load(sys.argv[1])
n = len({k.split("/")[0] for k in data.files})
samples = [{k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}/")} for i in range(n)]
outputs = {}
for art in map(Path, sys.argv[3:]):
    model = load(art)
    for i, feeds in enumerate(samples):
        for name, value in model.run(feeds).items():
            outputs[f"{art.name}/{i}/{name}"] = value
np.savez(sys.argv[2], **outputs)
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "flags": sorted(cpu_flags())}))
"""


def _emulator() -> str:
    """qemu-aarch64's path; the test fails (never skips) when the emulator, sysroot or linker is missing."""
    qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    problems = []
    if qemu is None:
        problems.append("qemu-aarch64 is not installed")
    if not (SYSROOT / ".complete").is_file():
        problems.append(f"the aarch64 sysroot {SYSROOT} is missing or incomplete")
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        problems.append("aarch64-linux-gnu-gcc (it links the aarch64 artifacts) is not installed")
    if problems:
        pytest.fail(f"{'; '.join(problems)}: {SETUP}", pytrace=False)
    return qemu


def run_on_aarch64(
    artifacts: list[Path], samples: list[dict], tmp: Path, cpu: str | None = None
) -> tuple[dict, dict[str, list[dict]]] | subprocess.CompletedProcess:
    """Run ``artifacts`` on ``samples`` under qemu-aarch64 (``cpu``: its -cpu model, default "max"):
    ``(facts printed there, {artifact name: [outputs per sample]})``. With a ``cpu`` the finished
    process is returned instead, for the caller to check."""
    qemu = _emulator()
    feeds = tmp / "feeds.npz"
    np.savez(feeds, **{f"{i}/{k}": v for i, s in enumerate(samples) for k, v in s.items()})
    script, out = tmp / "run_aarch64.py", tmp / "outputs.npz"
    script.write_text(RUNNER)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": f"{SYSROOT / 'site-packages'}:{ROOT}",
        "PYTHONNOUSERSITE": "1",
        "PYTHONPYCACHEPREFIX": str(SYSROOT / ".pycache"),  # not the checkout's __pycache__
        "TVM_USE_RUNTIME_LIB": "1",
    }
    cmd = [qemu, *(["-cpu", cpu] if cpu else []), "-L", str(SYSROOT), str(SYSROOT / "usr/bin/python3.11")]
    proc = subprocess.run(
        [*cmd, str(script), str(feeds), str(out), *map(str, artifacts)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if cpu:
        return proc
    assert proc.returncode == 0, f"under qemu-aarch64:\n{proc.stdout}\n{proc.stderr}"
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    data = np.load(out)
    results = {}
    for art in artifacts:
        results[art.name] = [
            {k.rsplit("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{art.name}/{i}/")}
            for i in range(len(samples))
        ]
    return facts, results


def run_on_x86(art: Path, samples: list[dict]) -> list[dict]:
    model = edgecompile.load(art)
    return [model.run(s) for s in samples]


INT8_TOL = 1e-2  # a few int8 steps of the output range: float rounding flipping a requantization


def compare(recipe: str, ref: list[dict], got: list[dict]) -> list[float]:
    """Bit equality for integer-only recipes, ``assert_close`` otherwise (fp32: ``REL_TOL``; int8:
    ``INT8_TOL``); the relative errors."""
    errors = []
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        assert r.keys() == g.keys()
        for name in r:
            assert r[name].dtype == g[name].dtype and r[name].shape == g[name].shape, name
            if "integer-only" in recipe:
                diff = int(np.sum(r[name] != g[name]))
                assert diff == 0, f"{recipe} {name}: {diff} of {r[name].size} values differ from the x86 build"
                errors.append(0.0)
            elif recipe.startswith("int8"):
                errors.append(assert_close(r[name], g[name], INT8_TOL))
            else:
                errors.append(assert_close(r[name], g[name]))
    return errors


_built: dict[str, Path] = {}


def tiny_bert(tmp_path_factory, target: str, recipe: str) -> Path:
    """The example model compiled once per (target, recipe) for this module."""
    key = f"{Path(target).stem}-{recipe.replace(':', '-').replace('=', '')}"
    if key not in _built:
        out = tmp_path_factory.mktemp("qemu") / key
        calib = None if recipe == "fp32" else CALIB
        _built[key] = edgecompile.compile(
            EXAMPLE_ONNX, target=target, output=out, input_shapes=EXAMPLE_SHAPES, recipe=recipe, calib=calib
        )
    return _built[key]


@pytest.fixture(scope="module")
def dotprod_profile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "aarch64-linux-dotprod.toml"
    path.write_text(DOTPROD_PROFILE)
    return path


# 16 of the 64 calibration samples: enough for the scales, and the compile is quicker.
CASES = [  # (aarch64 target, recipe)
    ("aarch64-linux", "fp32"),
    ("aarch64-linux", "int8-integer-only:samples=16"),
    ("dotprod", "int8:samples=16"),
    ("dotprod", "int8-integer-only:samples=16"),
]


def test_tiny_bert_runs_on_aarch64_like_on_x86(tmp_path_factory, tmp_path, dotprod_profile, example_feeds):
    _emulator()
    samples = [example_feeds, {**example_feeds, "attention_mask": np.tril(np.ones((1, 32), np.int64), 19)[:1]}]
    arm, x86 = {}, {}
    for target, recipe in CASES:
        arm[target, recipe] = tiny_bert(
            tmp_path_factory, str(dotprod_profile) if target == "dotprod" else target, recipe
        )
        x86[target, recipe] = tiny_bert(tmp_path_factory, "native", recipe)
    for art in arm.values():
        assert elf_machine(art / "model.so")[1] == EM_AARCH64, art

    # the dotprod artifacts' int8 GEMMs are sdot kernels, the plain aarch64 ones have none
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    assert objdump, f"aarch64-linux-gnu-objdump is missing: {SETUP}"
    for (target, recipe), art in arm.items():
        asm = subprocess.run([objdump, "-d", str(art / "model.so")], capture_output=True, text=True, check=True)
        has_sdot = "\tsdot\t" in asm.stdout
        assert has_sdot == (target == "dotprod" and recipe != "fp32"), (target, recipe)

    facts, outputs = run_on_aarch64(list(arm.values()), samples, tmp_path)
    assert facts["machine"] == "aarch64", facts
    assert {"asimd", "asimddp"} <= set(facts["flags"]), facts  # from the emulated auxv, not x86's cpuinfo
    assert "avx2" not in facts["flags"], facts

    for key, art in arm.items():
        ref = run_on_x86(x86[key], samples)
        errors = compare(key[1], ref, outputs[art.name])
        if key[1] == "fp32":
            assert max(errors) <= REL_TOL
    # the two masks give different outputs: the comparison is not of constants
    got = outputs[arm["aarch64-linux", "fp32"].name]
    assert not np.array_equal(got[0]["last_hidden_state"], got[1]["last_hidden_state"])


def test_cpu_without_dotprod_refuses_the_dotprod_artifact(tmp_path_factory, tmp_path, dotprod_profile, example_feeds):
    """The runtime's feature check sees the emulated CPU: a Cortex-A53 (ARMv8.0, no dot product) has
    asimd but not asimddp, so the sdot artifact is refused with the feature named, while the plain
    aarch64 one runs there."""
    _emulator()
    dotprod = tiny_bert(tmp_path_factory, str(dotprod_profile), "int8-integer-only:samples=16")
    plain = tiny_bert(tmp_path_factory, "aarch64-linux", "int8-integer-only:samples=16")
    proc = run_on_aarch64([dotprod], [example_feeds], tmp_path, cpu="cortex-a53")
    assert proc.returncode != 0
    assert "needs CPU features this machine lacks: asimddp;" in proc.stderr, proc.stderr
    proc = run_on_aarch64([plain], [example_feeds], tmp_path, cpu="cortex-a53")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "asimd" in facts["flags"] and "asimddp" not in facts["flags"], facts


def test_device_bundle_runs_on_aarch64(tmp_path_factory, tmp_path, dotprod_profile, example_feeds):
    """What a device gets (``edgecompile package``: the native runner cross-built, TVM's aarch64
    runtime libraries, the artifact; no Python) runs under qemu-aarch64 with only the sysroot's libc
    and libstdc++, and gives the x86 build's integer-only outputs bit for bit."""
    qemu = _emulator()
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.fail(f"aarch64-linux-gnu-g++ (it builds the bundle's runner) is not installed: {SETUP}", pytrace=False)
    from edgecompile.artifact.bundle import make_bundle

    recipe = "int8-integer-only:samples=16"
    art = tiny_bert(tmp_path_factory, str(dotprod_profile), recipe)
    bundle = make_bundle(art, tmp_path / "bundle", runtime_from=SYSROOT / "site-packages")
    assert bundle.beyond_weights is not None and bundle.beyond_weights <= 8 * 2**20, bundle.to_json()
    runner = bundle.root / "run_model"
    assert elf_machine(runner)[1] == EM_AARCH64
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    for name, value in example_feeds.items():
        np.ascontiguousarray(value).tofile(tmp_path / "in" / f"{name}.bin")
    proc = subprocess.run(
        [
            qemu,
            "-L",
            str(SYSROOT),
            str(runner),
            str(bundle.root / "model"),
            str(tmp_path / "in"),
            str(tmp_path / "out"),
        ],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"under qemu-aarch64:\n{proc.stdout}\n{proc.stderr}"
    ref = run_on_x86(tiny_bert(tmp_path_factory, "native", recipe), [example_feeds])[0]
    got = {k: np.fromfile(tmp_path / "out" / f"{k}.bin", v.dtype).reshape(v.shape) for k, v in ref.items()}
    compare(recipe, [ref], [got])


def test_ranged_artifact_runs_each_length_on_aarch64(tmp_path, dotprod_profile):
    """One ranged integer-only artifact cross-built for aarch64 (dotprod) takes lengths 5 and 20
    under qemu-aarch64 (our Python runtime picks the build and pads) and gives the ranged x86 build's
    outputs bit for bit."""
    shapes = {"input_ids": "1x1..32", "attention_mask": "1x1..32"}
    recipe = "int8-integer-only:samples=16"
    built = {
        t: edgecompile.compile(EXAMPLE_ONNX, target=t, output=tmp_path / Path(t).stem, input_shapes=shapes,
                               recipe=recipe, calib=CALIB, buckets={"seq": [16, 32]})
        for t in ("native", str(dotprod_profile))
    }  # fmt: skip
    data = np.load(EXAMPLE_ONNX.parent / "tiny_bert_inputs.npz")
    samples = [{k: np.ascontiguousarray(v[:, :n]) for k, v in data.items()} for n in (5, 20)]
    _facts, results = run_on_aarch64([built[str(dotprod_profile)]], samples, tmp_path)
    got = results[built[str(dotprod_profile)].name]
    assert [g["last_hidden_state"].shape for g in got] == [(1, 5, 64), (1, 20, 64)]
    compare(recipe, run_on_x86(built["native"], samples), got)


# 45-60 s of compiles and the emulated run, plus the digits fixture (training: 18-100 s here): with it the
# file took 2.2-4.4 min on this 2-core machine, without it about 75 s.
@pytest.mark.slow
def test_digits_vit_runs_on_aarch64_like_on_x86(digits, tmp_path):
    """The digits ViT (float image input: the integer-only build quantizes it on the way in)."""
    _emulator()
    data, onnx_path, calib, tmp = digits
    samples = [{"pixel_values": x[None]} for x in data["x_test"][:8]]
    arm, x86 = [], []
    for recipe in ("fp32", "int8-integer-only:samples=32"):
        c = None if recipe == "fp32" else calib
        name = recipe.split(":")[0]
        arm.append(
            edgecompile.compile(
                onnx_path, target="aarch64-linux", output=tmp / f"qemu-arm-{name}", recipe=recipe, calib=c
            )
        )
        x86.append(
            edgecompile.compile(onnx_path, target="native", output=tmp / f"qemu-x86-{name}", recipe=recipe, calib=c)
        )
    facts, outputs = run_on_aarch64(arm, samples, tmp_path)
    assert facts["machine"] == "aarch64", facts
    for recipe, a, x in zip(("fp32", "int8-integer-only"), arm, x86):
        compare(recipe, run_on_x86(x, samples), outputs[a.name])
    # and the logits are the model's: the same predictions as the x86 build's
    preds = [int(np.argmax(o["logits"])) for o in outputs[arm[1].name]]
    assert preds == [int(np.argmax(o["logits"])) for o in run_on_x86(x86[1], samples)]


def _auxv(entries: list[tuple[int, int]], word: int = 8) -> bytes:
    code = "<Q" if word == 8 else "<I"
    return b"".join(struct.pack(code, k) + struct.pack(code, v) for k, v in [*entries, (0, 0)])


def test_auxv_hwcaps_name_the_features():
    hwcap = 1 << 0 | 1 << 1 | 1 << 20  # fp, asimd, asimddp
    hwcap2 = 1 << 13 | 1 << 14  # i8mm, bf16
    blob = _auxv([(6, 4096), (hostinfo.AT_HWCAP, hwcap), (hostinfo.AT_HWCAP2, hwcap2), (25, 0xFFFF0000)])
    assert hostinfo.parse_auxv(blob)[hostinfo.AT_HWCAP] == hwcap
    assert hostinfo.auxv_flags("aarch64", blob) == {"fp", "asimd", "asimddp", "i8mm", "bf16"}
    # 32-bit ARM: 4-byte words, its own bit table (neon is bit 12)
    assert hostinfo.auxv_flags("arm", _auxv([(hostinfo.AT_HWCAP, 1 << 12 | 1 << 16)], word=4)) == {"neon", "vfpv4"}
    # entries after AT_NULL, a truncated tail and an unknown arch are ignored
    assert hostinfo.auxv_flags("aarch64", _auxv([]) + _auxv([(hostinfo.AT_HWCAP, 2)])) == set()
    assert hostinfo.auxv_flags("aarch64", blob[:-3]) == {"fp", "asimd", "asimddp", "i8mm", "bf16"}
    assert hostinfo.auxv_flags("riscv64", blob) == set()


def test_cpu_flags_prefer_auxv_on_arm(monkeypatch):
    """Under qemu-user /proc/cpuinfo is the x86 host's: on ARM the auxv's capabilities win, and
    /proc/cpuinfo is the fallback where the auxv cannot be read."""
    monkeypatch.setattr(hostinfo, "host_arch", lambda: "aarch64")
    monkeypatch.setattr(hostinfo, "_cpuinfo_flags", lambda: {"sse2", "avx2"})
    monkeypatch.setattr(hostinfo, "_read_auxv", lambda: _auxv([(hostinfo.AT_HWCAP, 0b11)]))
    assert hostinfo.cpu_flags() == {"fp", "asimd"}
    monkeypatch.setattr(hostinfo, "_read_auxv", lambda: b"")
    assert hostinfo.cpu_flags() == {"sse2", "avx2"}
    monkeypatch.setattr(hostinfo, "host_arch", lambda: "x86_64")
    monkeypatch.setattr(hostinfo, "_read_auxv", lambda: _auxv([(hostinfo.AT_HWCAP, 0b11)]))
    assert hostinfo.cpu_flags() == {"sse2", "avx2"}


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/auxv is Linux's")
def test_this_process_auxv_parses():
    entries = hostinfo.parse_auxv(Path("/proc/self/auxv").read_bytes())
    assert entries.get(6) == os.sysconf("SC_PAGE_SIZE")  # AT_PAGESZ
