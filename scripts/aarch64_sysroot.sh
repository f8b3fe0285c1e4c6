#!/usr/bin/env bash
# Build an aarch64 (arm64) sysroot in which our runtime runs under user-mode emulation:
#   qemu-aarch64 -L DEST DEST/usr/bin/python3.11 script.py    (PYTHONPATH=DEST/site-packages:REPO)
# It holds Debian 12's arm64 python3.11 and the libraries it and TVM need (unpacked from the .debs,
# fetched with a private apt state: the system's apt configuration and dpkg are left alone), and the
# manylinux aarch64 wheels of apache-tvm, apache-tvm-ffi, numpy, ml_dtypes and typing_extensions (the
# versions this checkout pins and its .venv has) unpacked into DEST/site-packages. Like a device bundle, the TVM tree has
# libtvm_runtime.so but not the compiler library.
#
# Usage: scripts/aarch64_sysroot.sh [DEST]      (default: .cache/aarch64-sysroot in the repository)
# Idempotent: when DEST is complete for the same package set it does nothing. Needs apt-get and
# dpkg-deb (Debian), python3 with pip (the .venv's by default; PYTHON=... to choose) and the network
# to Debian's archive and PyPI.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-$ROOT/.cache/aarch64-sysroot}"
mkdir -p "$(dirname "$DEST")"
DEST="$(cd "$(dirname "$DEST")" && pwd)/$(basename "$DEST")"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
say() { echo "aarch64-sysroot: $*"; }

# Debian arm64 packages: the interpreter, its stdlib, and the shared libraries they, TVM's runtime and
# numpy load (libpython3.11-stdlib's curses/dbm/nis/readline/sqlite libraries are left out: unused).
DEBS=(libc6 libgcc-s1 gcc-12-base libstdc++6 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
    zlib1g libexpat1 libssl3 libffi8 libbz2-1.0 liblzma5 libcrypt1 libuuid1)
pin() { sed -n "s/^ *\"$1==\([^\"]*\)\".*/\1/p" "$ROOT/pyproject.toml" | head -n1; }
TVM_VERSION="$(pin apache-tvm)"
FFI_VERSION="$(pin apache-tvm-ffi)"
# apache-tvm's runtime needs numpy, ml_dtypes and typing_extensions: the versions the .venv has.
VENV_VERSIONS="$("$PYTHON" -c 'import importlib.metadata as m
print(" ".join(f"{p}=={m.version(p)}" for p in ("numpy", "ml_dtypes", "typing_extensions")))' 2>/dev/null || true)"
if [ -z "$TVM_VERSION" ] || [ -z "$FFI_VERSION" ] || [ -z "$VENV_VERSIONS" ]; then
    echo "aarch64-sysroot: cannot tell the versions (apache-tvm '$TVM_VERSION', apache-tvm-ffi '$FFI_VERSION'" \
        "from pyproject.toml; numpy, ml_dtypes, typing_extensions from $PYTHON): install the .venv first" >&2
    exit 1
fi
read -r -a DEPS <<<"$VENV_VERSIONS"
WHEELS=("apache-tvm==$TVM_VERSION" "apache-tvm-ffi==$FFI_VERSION" "${DEPS[@]}")
KEY="format 1; debian bookworm arm64: ${DEBS[*]}; wheels cp311 aarch64: ${WHEELS[*]}"

# One build at a time (a second caller waits, then finds DEST complete).
exec 9>"$DEST.lock"
flock 9
if [ -f "$DEST/.complete" ] && [ "$(cat "$DEST/.complete")" = "$KEY" ]; then
    say "$DEST is complete (${WHEELS[*]}); nothing to do"
    exit 0
fi
[ -e "$DEST" ] && say "$DEST is incomplete or for other versions: rebuilding it"

WORK="$DEST.partial"
rm -rf "$WORK"
mkdir -p "$WORK/root" "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/debs" "$WORK/wheels"
: >"$WORK/apt/status"
# A private apt state for arm64 over the system's sources (no dpkg --add-architecture needed).
APT=(-o "APT::Architecture=arm64" -o "APT::Architectures::=arm64" -o "Dir::State=$WORK/apt"
    -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::State::status=$WORK/apt/status"
    -o "Dir::Cache=$WORK/apt/cache" -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
say "fetching Debian's arm64 package lists (private apt state in $WORK/apt)"
apt-get "${APT[@]}" update -qq
say "downloading ${#DEBS[@]} arm64 packages: ${DEBS[*]}"
(cd "$WORK/debs" && apt-get "${APT[@]}" download -qq "${DEBS[@]}")
for deb in "$WORK"/debs/*.deb; do
    dpkg-deb -x "$deb" "$WORK/root"
done

say "downloading aarch64 wheels: ${WHEELS[*]}"
# pip does not widen --platform to older manylinux tags: list every one up to bookworm's glibc 2.36.
PLATFORMS=(--platform manylinux2014_aarch64)
for minor in $(seq 17 36); do PLATFORMS+=(--platform "manylinux_2_${minor}_aarch64"); done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    "${PLATFORMS[@]}" --platform any -d "$WORK/wheels" "${WHEELS[@]}"
SITE="$WORK/root/site-packages"
mkdir -p "$SITE"
for whl in "$WORK"/wheels/*.whl; do
    "$PYTHON" -m zipfile -e "$whl" "$SITE"
done
# What a device carries: the runtime library, not the 240 MB compiler library nor the CUTLASS headers.
rm -rf "$SITE/tvm/lib/libtvm_compiler.so" "$SITE/tvm/3rdparty"

# Python finds its stdlib from the interpreter's own path, so the sysroot works wherever it lies.
PY="$WORK/root/usr/bin/python3.11"
[ -x "$PY" ] || { echo "aarch64-sysroot: $PY is missing after unpacking" >&2; exit 1; }
if command -v qemu-aarch64 >/dev/null; then
    say "checking: qemu-aarch64 python3.11 imports tvm.runtime and numpy"
    TVM_USE_RUNTIME_LIB=1 PYTHONNOUSERSITE=1 PYTHONPATH="$SITE" qemu-aarch64 -L "$WORK/root" "$PY" -c \
        'import hashlib, platform, zipfile, numpy, tvm.runtime; print("  ", platform.machine(), "python", platform.python_version(), "numpy", numpy.__version__, "tvm", tvm.__version__)'
else
    say "qemu-aarch64 is not installed (apt-get install qemu-user): skipping the check run"
fi
rm -rf "$WORK/apt" "$WORK/debs" "$WORK/wheels"
rm -rf "$DEST"
mv "$WORK/root" "$DEST"
rmdir "$WORK"
echo "$KEY" >"$DEST/.complete"
say "done: $DEST ($(du -sh "$DEST" | cut -f1)); run with: qemu-aarch64 -L $DEST $DEST/usr/bin/python3.11," \
    "PYTHONPATH=$DEST/site-packages"
