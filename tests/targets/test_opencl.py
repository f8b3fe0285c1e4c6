"""OpenCL targets (no OpenCL device here): the artifact carries OpenCL C source whose kernels are
exactly the entry points of the scheduled module, integer recipes stay integer on the device, and
the host code is linked for the profile's CPU."""

from __future__ import annotations

import json
import re

import pytest
import tvm
from helpers import EXAMPLE_ONNX, EXAMPLE_SHAPES, ROOT
from test_targets import ELF_MACHINE, elf_machine

import edgecompile
from edgecompile.api import apply_recipe
from edgecompile.lower.build import compile_module, make_target
from edgecompile.lower.cuda_binary import device_sources
from edgecompile.lower.pipeline import pipeline_for
from edgecompile.targets import get_profile

CALIB = ROOT / "examples" / "tiny_bert_calib.npz"
SHAPES = {k: tuple(int(x) for x in v.split("x")) for k, v in EXAMPLE_SHAPES.items()}


def _module(recipe: str):
    return apply_recipe(EXAMPLE_ONNX, recipe, None if recipe == "fp32" else CALIB, input_shapes=SHAPES)[0]


@pytest.mark.parametrize("recipe", ["fp32", "int8-integer-only"])
def test_opencl_kernels_are_the_scheduled_entry_points(recipe):
    profile = get_profile("opencl-mali").resolved()
    mod = _module(recipe)
    target = make_target(profile)
    with target:
        lowered = pipeline_for(target)(mod)
    expected = {f"{gv.name_hint}_kernel" for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    sources = device_sources(compile_module(mod, profile), "opencl")
    assert len(sources) == 1
    source = sources[0]
    kernels = set(re.findall(r"__kernel void (\w+)\(", source))
    assert kernels == expected and len(kernels) > 10
    if recipe == "int8-integer-only":
        # int8 operands reach the GPU as char, accumulators as int; the matmuls take int8 in
        matmuls = re.findall(r"__kernel void (fused_matmul\w*)\(([^)]*)\)", source)
        assert matmuls and all("__global char*" in args for _name, args in matmuls)
        assert "__global int*" in source
        # our hand-scheduled integer square root runs on the GPU, one row per work item
        assert any(k.startswith("ilnorm_factor_i64") for k in kernels) and "get_local_id(0)" in source


@pytest.mark.parametrize("name", ["opencl-mali", "opencl-adreno"])
def test_opencl_artifact_carries_the_source_and_host_code(name, tmp_path):
    art = edgecompile.compile(EXAMPLE_ONNX, target=name, output=tmp_path / name, input_shapes=EXAMPLE_SHAPES)
    manifest = json.loads((art / "manifest.json").read_text())
    lib = art / manifest["library"]
    assert b"__kernel void " in lib.read_bytes()  # the OpenCL source travels in the library
    # the weights do not: lifted into weights.bin like on CPU and CUDA, uploaded to the GPU at load
    assert manifest["weights"]["file"] == "weights.bin" and len(manifest["weights"]["tensors"]) > 10
    if lib.suffix == ".so":  # mali: linked with the aarch64 cross compiler
        assert elf_machine(lib) == (2, ELF_MACHINE["aarch64"])
    else:  # adreno: the Android NDK is not here, objects and the link command
        assert manifest["link_command"] and "aarch64-linux-android" in json.dumps(manifest["target"])


def test_ranged_opencl_artifact_stores_its_weights_once(tmp_path):
    """One ranged OpenCL artifact (Mali, aarch64 host): a library per bucket, each with its OpenCL
    source, all taking the same weights.bin."""
    art = edgecompile.compile(EXAMPLE_ONNX, target="opencl-mali", output=tmp_path / "r", recipe="int8-integer-only",
                              calib=CALIB, input_shapes={"input_ids": "1x1..32", "attention_mask": "1x1..32"},
                              buckets={"seq": [8, 32]})  # fmt: skip
    manifest = json.loads((art / "manifest.json").read_text())
    builds = manifest["ranged"]["builds"]
    assert [b["sizes"] for b in builds] == [{"seq": 8}, {"seq": 32}]
    # calibration replayed: the same bytes, stored once; only a table cut to the length differs
    assert len(set(builds[1]["weights"]) - set(builds[0]["weights"])) <= 1
    for b in builds:
        lib = (art / b["library"]).read_bytes()
        assert b"__kernel void " in lib and elf_machine(art / b["library"]) == (2, ELF_MACHINE["aarch64"])
    assert sorted(p.name for p in art.glob("*.bin")) == ["weights.bin"]
