"""A device bundle: exactly the files a device needs to run an artifact, listed with their sizes.

``edgecompile package ARTIFACT --runtime-only -o bundle/`` writes, for a CPU target::

    bundle/run_model                  our native runner, built for the target: no Python on the device
    bundle/lib/                       libtvm_runtime.so, libtvm_ffi.so (TVM's runtime, for the target)
    bundle/model/                     the artifact (manifest.json, model.so) and io.txt (input/output specs)

``bundle/run_model bundle/model IN_DIR OUT_DIR [RUNS]`` reads IN_DIR/NAME.bin per input and writes
OUT_DIR/NAME.bin per output (raw C-order arrays). ``model/io.txt`` lists them, one line each::

    input NAME DTYPE DIM... [range LO HI]     e.g. "input input_ids int64 1 32 range -1000 999"
    output NAME DTYPE DIM...
    weights FILE BYTES                        the weights file (model/weights.bin), memory-mapped
    weight DTYPE OFFSET DIM...                one per weight tensor, in the order main takes them

A ranged artifact (``--input-shape input_ids=1x1..256``) adds, after them::

    group NAME LO HI                          a ranged dimension's range ("group seq 1 256")
    axis input|output NAME AXIS GROUP         an axis that follows it ("axis input input_ids 1 seq")
    build LIB GROUP=SIZE... weights IDX...    one build: its library, its sizes, its weight tensors
                                              (indices into the weight lines, in the order it takes them)

and ``run_model`` reads each group's size off the input files' byte counts (an input with more
than one ranged axis, batch and length, also needs ``IN_DIR/NAME.shape``: its dimensions), runs the
smallest build that holds them on the inputs zero-padded to its sizes, and writes the outputs cut
back to them; an input file whose size fits no length in range exits 2.

NAME is the tensor's name, or where that cannot be one file name (``/encoder/out``), the plain name
io.txt gives it (``_encoder_out``: :func:`file_name`). ``range LO HI`` is the input's inclusive
``valid_range`` from the manifest (integer inputs that index a table, e.g. token ids); a reader that
stops at the first non-integer after DTYPE sees the older format. Before running, ``run_model``
refuses (exit 2, naming the input, value and position) integer inputs outside their range and float
inputs holding NaN or +-Inf (the runtime's NaN policy), a malformed io.txt (names must be plain file
names), input files of the wrong size, a missing output folder, a bad RUNS and a ``model.so`` that
is not a regular file in the model folder; an error inside TVM's runtime exits 3. See
``runner/run_model.cc``. It is compiled at package time with the host's C++ compiler or the
profile's cross compiler (``aarch64-linux-gnu-gcc`` -> ``aarch64-linux-gnu-g++``) against the TVM
FFI headers.

``--python`` (needed for CUDA targets, whose inputs our Python runtime copies to the GPU) adds our
Python runtime instead of relying on the native runner alone::

    bundle/run.py                     python3 run.py --input in.npz [-o out.npz] [--bench]
    bundle/python/edgecompile/        our runtime: runtime/, errors.py (no compiler side): the files
                                      of its import closure (:mod:`edgecompile.artifact.closure`)
    bundle/python/tvm/, tvm_ffi/      the TVM Python modules a runtime-only load imports, their
                                      extension module and libraries (then the only copy of them)

The Python layer needs ``python3`` (the version the TVM wheels were built for) with numpy and
ml_dtypes on the device, and costs about 4 MB more (TVM FFI's Python extension links
``libtvm_ffi_testing.so``). Which TVM Python modules are needed is read off a runtime-only import
on this machine. Files come from the TVM packages for the artifact's architecture: the installed
ones when the artifact runs on this machine's architecture, else ``runtime_from`` (a directory
with the target's ``apache-tvm`` and ``apache-tvm-ffi`` wheels unpacked, e.g. ``pip download
--platform manylinux2014_aarch64 --only-binary=:all: --no-deps apache-tvm==0.27.0.post1
apache-tvm-ffi==0.1.14.post0`` then unzip both).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgecompile.artifact.closure import import_closure
from edgecompile.artifact.package import check_replaceable, swap_into_place
from edgecompile.artifact.signing import sign_directory
from edgecompile.errors import ArtifactError
from edgecompile.runtime.hostinfo import host_arch
from edgecompile.runtime.manifest import MANIFEST, read_verified
from edgecompile.runtime.signature import SIGNATURE

RUN_PY = '''"""Run the bundled model: python3 run.py --input in.npz [-o out.npz] [--bench] [--threads N]
[--trusted-key KEY.pub ...]."""
import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "python"))
os.environ["TVM_USE_RUNTIME_LIB"] = "1"

import numpy as np  # noqa: E402

from edgecompile.runtime import load  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--input", "-i", help=".npz holding every input by name")
parser.add_argument("--output", "-o", help="write the outputs to this .npz")
parser.add_argument("--bench", action="store_true", help="time the model (median of 50 runs)")
parser.add_argument("--threads", type=int, default=None)
parser.add_argument("--trusted-key", action="append", help="public key the model must be signed by (repeatable)")
args = parser.parse_args()
model = load(HERE / "model", trusted_keys=args.trusted_key)
if args.input:
    data = np.load(args.input)
    outputs = model.run({k: data[k] for k in data.files}, threads=args.threads)
    if args.output:
        np.savez(args.output, **outputs)
    for name, value in outputs.items():
        print(f"{name}: shape {value.shape} {value.dtype}")
if args.bench:
    print(f"median {model.benchmark(runs=50, threads=args.threads).median_ms:.3f} ms")
'''

# Pure-Python packages the runtime imports that the bundle carries (numpy and ml_dtypes, which have
# compiled parts per platform and Python version, are the device's to install).
BUNDLED_PACKAGES = ("tvm", "tvm_ffi", "typing_extensions.py")
TRACE = """
import json, os, sys
os.environ["TVM_USE_RUNTIME_LIB"] = "1"
from edgecompile.runtime.model import import_tvm_runtime
import_tvm_runtime()
print(json.dumps([getattr(m, "__file__", None) for m in list(sys.modules.values())]))
"""


# libc, libstdc++, libm and the TVM runtime's own heap in run_model: 2.7 MB measured on x86-64
# Debian 12 (peak RSS less weights, plan and mapped code); rounded up for other C libraries.
SYSTEM_BYTES = 6 * 1024 * 1024


@dataclass
class BundleFile:
    path: str  # relative to the bundle
    size: int
    role: str  # "model code", "model weights", "runtime library", "runner", "runtime python"


@dataclass
class Bundle:
    root: Path
    files: list[BundleFile]
    weights_bytes: int | None  # the weights file's, or the library's constants (from the manifest)
    memory: dict | None = None  # the manifest's memory plan

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)

    def by_role(self) -> dict[str, int]:
        roles: dict[str, int] = {}
        for f in self.files:
            roles[f.role] = roles.get(f.role, 0) + f.size
        return roles

    @property
    def beyond_weights(self) -> int | None:
        return None if self.weights_bytes is None else self.total - self.weights_bytes

    @property
    def expected_resident(self) -> int | None:
        """What ``run_model`` should hold at its peak: the weights (mapped once), the planned arena,
        the outputs and the largest kernel's scratch, the code it maps (runner, TVM's runtime, the
        model library: an upper bound of its resident part), and :data:`SYSTEM_BYTES` for the C and
        C++ libraries and the runtime's heap. None without a memory plan."""
        if not self.memory:
            return None
        roles = self.by_role()
        code = roles.get("runner", 0) + roles.get("runtime library", 0) + roles.get("model code", 0)
        plan = sum(self.memory.get(k, 0) for k in ("arena_bytes", "outputs_bytes", "kernel_scratch_bytes"))
        return (self.weights_bytes or 0) + plan + code + SYSTEM_BYTES

    def to_json(self) -> dict:
        return {
            "files": [f.__dict__ for f in self.files],
            "total_bytes": self.total,
            "weights_bytes": self.weights_bytes,
            "beyond_weights_bytes": self.beyond_weights,
            "by_role": self.by_role(),
            "memory_plan": self.memory,
            "expected_resident_bytes": self.expected_resident,
        }


def own_files() -> list[str]:
    """Our runtime's Python files, relative to the ``edgecompile/`` directory: the files of
    ``edgecompile.runtime``'s import closure within ``edgecompile`` (top-level files first)."""
    return list(import_closure("edgecompile.runtime").files)


def make_bundle(
    artifact: Path,
    out: Path,
    runtime_from: Path | None = None,
    python: bool = False,
    progress=None,
    security: BundleSecurity | None = None,
) -> Bundle:
    """Write the device bundle of ``artifact`` into ``out`` (see the module docstring)."""
    say = progress or (lambda _msg: None)
    security = security or BundleSecurity()
    artifact, out = Path(artifact), Path(out)
    manifest = read_verified(artifact, security.trusted_keys)
    target = manifest["target"]
    device = _check_request(manifest, out, python, security.force)
    source = _runtime_source(target["arch"], runtime_from)
    traced = _traced_python() if python else []
    staging = _Staging(out.with_name(f".{out.name}.staging"))
    try:
        _put_model(staging, artifact, manifest, security.sign_key)
        staging.write("model/io.txt", io_spec(manifest), "model code")
        lib_dirs = (
            {"tvm": "python/tvm/lib", "tvm_ffi": "python/tvm_ffi/lib"} if python else {"tvm": "lib", "tvm_ffi": "lib"}
        )
        for rel in _native_files(source, device, python):
            staging.put(source / rel, f"{lib_dirs[rel.split('/')[0]]}/{Path(rel).name}", "runtime library")
        if device == "cpu":
            say(f"building the native runner for {target['name']}")
            runner = build_runner(target, source, staging.root / "run_model")
            staging.files.append(BundleFile("run_model", runner.stat().st_size, "runner"))
        if python:
            _put_python(staging, source, traced)
        weights = _mark_weights(staging, manifest)
        bundle = Bundle(out, staging.files, weights, manifest.get("memory"))
        (staging.root / "bundle.json").write_text(json.dumps(bundle.to_json(), indent=1))
        check_replaceable(out, security.force, _bundle_listing, "a bundle")
        swap_into_place(staging.root, out)
        return bundle
    finally:
        shutil.rmtree(staging.root, ignore_errors=True)


def _mark_weights(staging: _Staging, manifest: dict) -> int | None:
    """Give the weights their role in the listing: the weights file, or (an artifact that keeps them in
    its library: OpenCL) the library's constants split from its code. Returns their bytes."""
    section = manifest.get("weights")
    if section:
        blob = next(f for f in staging.files if f.path == f"model/{section['file']}")
        blob.role = "model weights"
        return blob.size
    weights = manifest.get("weights_bytes")
    if weights is not None:
        library = next(f for f in staging.files if f.path == f"model/{manifest['library']}")
        library.size -= weights
        staging.files.append(BundleFile(f"model/{manifest['library']} (constants)", weights, "model weights"))
    return weights


def _put_model(staging: _Staging, artifact: Path, manifest: dict, sign_key) -> None:
    """The artifact's manifest, its files and its signature into ``model/``; with ``sign_key`` the
    bundled manifest is signed anew (replacing any signature the artifact had)."""
    signed = [SIGNATURE] if (artifact / SIGNATURE).is_file() and sign_key is None else []
    for name in sorted([MANIFEST, *signed, *manifest["files"]]):
        staging.put(artifact / name, f"model/{name}", "model code")
    if sign_key is not None:
        sign_directory(staging.root / "model", sign_key)
        size = (staging.root / "model" / SIGNATURE).stat().st_size
        staging.files.append(BundleFile(f"model/{SIGNATURE}", size, "model code"))


def _check_request(manifest: dict, out: Path, python: bool, force: bool = False) -> str:
    """Refuse what cannot be bundled (a Core ML or unlinked artifact, a GPU one without ``--python``, an
    ``out`` that is not a bundle); returns the artifact's device."""
    target = manifest["target"]
    if target.get("runtime") == "coreml":
        raise ArtifactError(
            "a Core ML artifact runs with Core ML, not TVM's runtime: add its model.mlpackage to your app"
        )
    if not manifest["library"].endswith(".so"):
        raise ArtifactError(f"the artifact holds unlinked objects; link them first: {manifest.get('link_command')}")
    device = target.get("device", "cpu")
    if device != "cpu" and not python:
        raise ArtifactError(f"the native runner runs CPU targets; a {device} artifact needs --python")
    check_replaceable(out, force, _bundle_listing, "a bundle")
    return device


def _bundle_listing(out: Path) -> set[str] | None:
    """The files a bundle at ``out`` consists of (its ``bundle.json`` list), or None if it is not one."""
    try:
        return {f["path"] for f in json.loads((out / "bundle.json").read_text())["files"]} | {"bundle.json"}
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class BundleSecurity:
    """What ``package`` checks and adds: ``trusted_keys`` (raw public keys; the artifact must be signed by
    one), ``sign_key`` (a private key to sign the bundled manifest with), ``force`` (replace a bundle
    holding unlisted files)."""

    trusted_keys: list[bytes] | None = None
    sign_key: object = None
    force: bool = False


class _Staging:
    """The bundle being written (a fresh directory) and the files put into it so far."""

    def __init__(self, root: Path):
        self.root = root
        self.files: list[BundleFile] = []
        shutil.rmtree(root, ignore_errors=True)

    def put(self, src: Path, rel: str, role: str) -> None:
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        self.files.append(BundleFile(rel, dest.stat().st_size, role))

    def write(self, rel: str, text: str, role: str) -> None:
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.root / rel).write_text(text)
        self.files.append(BundleFile(rel, (self.root / rel).stat().st_size, role))


def _put_python(staging: _Staging, source: Path, traced: list[str]) -> None:
    """The Python layer: our runtime's files, the traced TVM Python modules, TVM FFI's extension, run.py."""
    own = Path(__file__).resolve().parents[1]
    for rel in own_files():
        staging.put(own / rel, f"python/edgecompile/{rel}", "runtime python")
    for rel in traced:
        if not (source / rel).is_file():
            raise ArtifactError(f"the TVM packages in {source} lack {rel}: not the wheels this build uses")
        staging.put(source / rel, f"python/{rel}", "runtime python")
    for ext in sorted((source / "tvm_ffi").glob("core.*.so")):
        staging.put(ext, f"python/tvm_ffi/{ext.name}", "runtime library")
    staging.write("run.py", RUN_PY, "runner")


def io_spec(manifest: dict) -> str:
    """``model/io.txt`` (see the module docstring): one line per input, then per output,
    ``input|output NAME DTYPE DIM...``, inputs with a ``valid_range`` ending in ``range LO HI``; then,
    for an artifact with a weights file, ``weights FILE BYTES`` and one ``weight DTYPE OFFSET DIM...``
    per tensor ``main`` takes after the inputs (the manifest's ``weights`` section).
    A ranged artifact adds ``group NAME LO HI``, ``axis input|output NAME AXIS GROUP`` (the axes that
    follow a group) and ``build LIB GROUP=SIZE... weights IDX...`` (each build's library and its
    weight tensors, indices into the ``weight`` lines) lines: ``run_model`` reads each group's size
    off the input files' byte counts, runs the smallest build that holds them (zero-padded) and writes
    the outputs cut back to those sizes.
    NAME is the tensor's file name for ``run_model`` (IN_DIR/NAME.bin, OUT_DIR/NAME.bin): the model's
    name where it is a plain file name, else :func:`file_name` of it (``/encoder/out`` ->
    ``_encoder_out``), made unique."""
    lines, used, names = [], set(), {}
    for kind, key in (("input", "inputs"), ("output", "outputs")):
        for t in manifest[key]:
            name = file_name(t["name"], used)
            used.add(name)
            names[kind, t["name"]] = name
            words = [kind, name, t["dtype"], *map(str, t["shape"])]
            if kind == "input" and t.get("valid_range") is not None:
                lo, hi = t["valid_range"]
                words += ["range", str(int(lo)), str(int(hi))]
            lines.append(" ".join(words))
    weights = manifest.get("weights")
    if weights:
        lines.append(f"weights {weights['file']} {weights['bytes']}")
        for t in weights["tensors"]:
            lines.append(" ".join(["weight", t["dtype"], str(t["offset"]), *map(str, t["shape"])]))
    if manifest.get("ranged"):
        lines += _ranged_lines(manifest, names)
    return "\n".join(lines) + "\n"


def _ranged_lines(manifest: dict, names: dict) -> list[str]:
    """io.txt's ``group``, ``axis`` and ``build`` lines of a ranged artifact (group names made plain)."""
    ranged = manifest["ranged"]
    plain = {g: "".join(c if c.isalnum() or c in "_-.:" else "_" for c in g) for g in ranged["groups"]}
    lines = [f"group {plain[g]} {e['range'][0]} {e['range'][1]}" for g, e in ranged["groups"].items()]
    lines += [f"axis input {names['input', d['input']]} {d['axis']} {plain[d['group']]}" for d in ranged["dims"]]
    for out, axes in ranged.get("outputs", {}).items():
        lines += [f"axis output {names['output', out]} {axis} {plain[g]}" for axis, g in axes.items()]
    for b in ranged["builds"]:
        sizes = " ".join(f"{plain[g]}={n}" for g, n in b["sizes"].items())
        lines.append(f"build {b['library']} {sizes} weights {' '.join(map(str, b['weights']))}".rstrip())
    return lines


def file_name(name: str, used: set[str] = frozenset()) -> str:
    """``name`` as one plain path component (printable ASCII, no space or '/'; not '.' or '..'): other
    characters become '_', and a suffix ``_2``, ``_3``... keeps it distinct from ``used``."""
    base = "".join(c if "!" <= c <= "~" and c != "/" else "_" for c in name)
    base = base if base not in ("", ".", "..") else f"_{base}_"
    out, i = base, 1
    while out in used:
        i += 1
        out = f"{base}_{i}"
    return out


def build_runner(target: dict, source: Path, dest: Path) -> Path:
    """Compile ``runner/run_model.cc`` for the target's CPU against the TVM libraries in ``source``."""
    cxx = _cxx_for(target)
    cmd = [
        cxx,
        "-std=c++17",
        "-O2",
        "-s",
        "-o",
        str(dest),
        str(Path(__file__).parent / "runner" / "run_model.cc"),
        f"-I{source / 'tvm_ffi' / 'include'}",
        f"-L{source / 'tvm' / 'lib'}",
        f"-L{source / 'tvm_ffi' / 'lib'}",
        "-ltvm_runtime",
        "-ltvm_ffi",
        "-Wl,-rpath,$ORIGIN/lib:$ORIGIN/python/tvm/lib:$ORIGIN/python/tvm_ffi/lib",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ArtifactError(f"building the native runner with {cxx} failed:\n{tail}")
    return dest


def _cxx_for(target: dict) -> str:
    """The C++ compiler for the target: the host's for this machine's architecture, else the g++/clang++
    beside the profile's first installed cross C compiler."""
    if target["arch"] == host_arch():
        candidates = [os.environ.get("CXX", ""), "c++", "g++", "clang++"]
    else:
        candidates = []
        for cc in target.get("cross_cc", []):
            cc = os.environ.get(cc[1:], "") if cc.startswith("$") else cc
            if cc.endswith("gcc"):
                candidates.append(cc[: -len("gcc")] + "g++")
            elif cc.endswith("clang"):
                candidates.append(cc + "++")
    for c in candidates:
        if c and shutil.which(c):
            return c
    tried = ", ".join(c for c in candidates if c)
    raise ArtifactError(
        f"no C++ compiler for {target['name']} to build the native runner (tried {tried}); "
        "install it (Debian: g++-aarch64-linux-gnu for aarch64) or pass --python"
    )


def _runtime_source(arch: str, runtime_from: Path | None) -> Path:
    """The site-packages directory whose tvm/ and tvm_ffi/ packages the bundle copies."""
    if runtime_from is not None:
        src = Path(runtime_from)
        if not (src / "tvm" / "lib" / "libtvm_runtime.so").is_file() or not (src / "tvm_ffi").is_dir():
            raise ArtifactError(f"--runtime-from {src} holds no unpacked apache-tvm and apache-tvm-ffi wheels")
        lib_arch = _elf_arch(src / "tvm" / "lib" / "libtvm_runtime.so")
        if lib_arch != arch:
            raise ArtifactError(f"--runtime-from {src} holds TVM for {lib_arch}, the artifact is for {arch}")
        return src
    if arch != host_arch():
        raise ArtifactError(
            f"the artifact runs on {arch}; this machine's TVM is for {host_arch()}: pass --runtime-from DIR with the "
            f"{arch} wheels unpacked (pip download --platform manylinux2014_{arch} --only-binary=:all: --no-deps "
            "apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post0, then unzip both into DIR)"
        )
    spec = importlib.util.find_spec("tvm_ffi")
    return Path(spec.origin).resolve().parents[1]


def _traced_python() -> list[str]:
    """Paths (relative to site-packages) of the bundled Python modules a runtime-only load imports."""
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    proc = subprocess.run([sys.executable, "-c", TRACE], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise ArtifactError(f"could not trace TVM's runtime imports: {proc.stderr.strip().splitlines()[-1:]}")
    site = _runtime_source(host_arch(), None)
    rels = set()
    for f in json.loads(proc.stdout.strip().splitlines()[-1]):
        if not f:
            continue
        p = Path(f).resolve()
        if p.is_relative_to(site) and p.suffix == ".py" and p.relative_to(site).parts[0] in BUNDLED_PACKAGES:
            rels.add(str(p.relative_to(site)))
    return sorted(rels)


def _native_files(source: Path, device: str, python: bool) -> list[str]:
    """TVM's runtime libraries (relative to ``source``) the bundle needs for ``device``."""
    libs = ["tvm/lib/libtvm_runtime.so", "tvm_ffi/lib/libtvm_ffi.so"]
    if device == "cuda":
        libs.append("tvm/lib/libtvm_runtime_cuda.so")
    if python:  # TVM FFI's Python extension links it
        libs.append("tvm_ffi/lib/libtvm_ffi_testing.so")
    return libs


def _elf_arch(path: Path) -> str:
    with open(path, "rb") as f:
        machine = int.from_bytes(f.read(20)[18:20], "little")
    return {62: "x86_64", 183: "aarch64", 40: "arm"}.get(machine, f"ELF machine {machine}")
