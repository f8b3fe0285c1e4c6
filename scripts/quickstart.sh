#!/usr/bin/env bash
# Install edgecompile into .venv, then the main job: inspect, compile, run and time the bundled
# example (a 2-layer BERT-style encoder exported from PyTorch with dynamic batch and sequence).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e .
ec=.venv/bin/edgecompile
$ec inspect examples/tiny_bert.onnx
$ec compile examples/tiny_bert.onnx --target native \
    --input-shape input_ids=1x32 --input-shape attention_mask=1x32 -o build/tiny_bert
$ec run build/tiny_bert --input examples/tiny_bert_inputs.npz --output build/tiny_bert_outputs.npz
$ec bench build/tiny_bert --runs 50
