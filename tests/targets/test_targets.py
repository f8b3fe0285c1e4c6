"""Target profiles: listing, lookup with suggestions, user profile files, and a build for every
bundled profile with the produced library's ELF machine checked."""

from __future__ import annotations

import json
import shutil
import tarfile

import pytest
from helpers import EXAMPLE_ONNX, EXAMPLE_SHAPES

import edgecompile
from edgecompile.errors import ArtifactError, TargetError
from edgecompile.targets import get_profile, list_profiles

REQUIRED = {
    "x86_64",
    "x86_64-avx2",
    "x86_64-avx512",
    "native",
    "aarch64-linux",
    "android-arm64",
    "armv7-linux",
    "cuda-sm80",
    "cuda-sm90",
    "opencl-adreno",
    "opencl-mali",
    "coreml-ios17",
    "coreml-macos14",
}
# ELF e_machine values: x86-64 62, AArch64 183, ARM 40.
ELF_MACHINE = {"x86_64": 62, "aarch64": 183, "arm": 40}


def elf_machine(path) -> tuple[int, int]:
    """(ELF class: 1 = 32-bit, 2 = 64-bit; e_machine) of a shared object."""
    data = path.read_bytes()[:20]
    assert data[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return data[4], int.from_bytes(data[18:20], "little")


def test_bundled_profiles_cover_the_product_targets():
    names = {p.name for p in list_profiles()}
    assert REQUIRED <= names
    for p in list_profiles():
        assert p.description and p.tvm["kind"] in ("llvm", "cuda", "opencl")
        assert p.runtime in ("tvm", "coreml")
        assert bool(p.minimum_deployment_target) == (p.runtime == "coreml")  # Core ML: the OS it needs
        assert set(p.energy) >= {"fp32_mul", "int8_mul", "int32_add"}


def test_unknown_target_suggests_nearest():
    with pytest.raises(TargetError) as e:
        get_profile("x86_64-avx51")
    assert "did you mean x86_64-avx512" in str(e.value)
    with pytest.raises(TargetError, match="did you mean.*aarch64-linux"):
        get_profile("aarch64")


def test_user_profile_file(tmp_path):
    prof = tmp_path / "myboard.toml"
    prof.write_text(
        'name = "myboard"\ndescription = "my x86 board"\narch = "x86_64"\n'
        '[tvm]\nkind = "llvm"\nmcpu = "x86-64"\n[energy]\nint8_mul = 0.5\n'
    )
    p = get_profile(str(prof))
    assert p.name == "myboard" and p.energy["int8_mul"] == 0.5 and p.energy["fp32_mul"] == 3.7
    art = edgecompile.compile(EXAMPLE_ONNX, target=str(prof), output=tmp_path / "art", input_shapes=EXAMPLE_SHAPES)
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["target"]["name"] == "myboard"
    assert edgecompile.load(art).benchmark(runs=2).median_ms > 0


@pytest.mark.parametrize(
    "text,msg",
    [
        ('name = "x"\n', "lacks the required key 'tvm'"),
        ('name = "x"\n[tvm]\nmcpu = "x"\n', "must be a table with a 'kind'"),
        ('name = "x"\ncolour = "red"\n[tvm]\nkind = "llvm"\n', "unknown keys"),
        ("name = \n", "cannot read target profile"),
    ],
)
def test_malformed_profile_is_a_clear_error(tmp_path, text, msg):
    prof = tmp_path / "bad.toml"
    prof.write_text(text)
    with pytest.raises(TargetError, match=msg):
        get_profile(str(prof))


def test_native_resolves_to_this_cpu():
    p = get_profile("native").resolved()
    assert p.tvm["mcpu"] not in ("native", "") and p.arch in ELF_MACHINE


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_target_builds(name, tmp_path):
    profile = get_profile(name).resolved()
    art = edgecompile.compile(EXAMPLE_ONNX, target=name, output=tmp_path / name, input_shapes=EXAMPLE_SHAPES)
    manifest = json.loads((art / "manifest.json").read_text())
    lib = art / manifest["library"]
    assert manifest["target"]["tvm"] == profile.tvm
    if profile.runtime == "coreml":  # an ML Program package, not a TVM library (tests/targets/test_coreml.py checks it)
        assert lib.name == "model.mlpackage" and (lib / "Data" / "com.apple.CoreML" / "model.mlmodel").is_file()
        with pytest.raises(ArtifactError, match="Core ML package"):
            edgecompile.load(art)
    elif lib.suffix == ".so":
        bits, machine = elf_machine(lib)
        assert machine == ELF_MACHINE[profile.arch]
        assert bits == (1 if profile.arch == "arm" else 2)
    else:  # no cross toolchain here: objects for the target plus the link command
        assert lib.name == "model.tar" and manifest["link_command"]
        with tarfile.open(lib) as tar:
            objs = [m for m in tar.getmembers() if m.name.endswith(".o")]
            assert objs
            obj = tar.extractfile(objs[0]).read(20)
        assert int.from_bytes(obj[18:20], "little") == ELF_MACHINE[profile.arch]
        with pytest.raises(ArtifactError, match="unlinked objects"):
            edgecompile.load(art)


@pytest.mark.parametrize(
    "name,cc", [("aarch64-linux", "aarch64-linux-gnu-gcc"), ("armv7-linux", "arm-linux-gnueabihf-gcc")]
)
def test_cross_targets_link_with_the_installed_toolchain(name, cc, tmp_path):
    """The test set-up installs Debian's cross compilers; with them, cross targets are linked."""
    if shutil.which(cc) is None:
        pytest.fail(f"{cc} is not installed: run the README's test command, which installs it")
    art = edgecompile.compile(EXAMPLE_ONNX, target=name, output=tmp_path / name, input_shapes=EXAMPLE_SHAPES)
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["library"] == "model.so" and manifest["linker"] == cc
    with pytest.raises(ArtifactError, match="compiled for"):
        edgecompile.load(art)
