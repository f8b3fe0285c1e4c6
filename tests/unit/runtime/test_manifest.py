"""The typed manifest: both backends' manifests serialize key for key as before, a plain dict is still
taken by ``finish``, and a read manifest comes back as a :class:`Manifest`."""

from __future__ import annotations

import json

import pytest

from edgecompile.artifact.package import finish
from edgecompile.runtime.manifest import MANIFEST, Manifest, read_verified

COMMON = {
    "target": {"name": "native", "arch": "x86_64"},
    "recipe": {"spec": "fp32", "parts": []},
    "source": {"frontend": "onnx", "file": "m.onnx"},
    "inputs": [{"name": "x", "dtype": "float32", "shape": [1, 4]}],
    "outputs": [{"name": "y", "dtype": "float32", "shape": [1, 2]}],
}
TVM_KEYS = [
    "target",
    "recipe",
    "source",
    "inputs",
    "outputs",
    "library",
    "linker",
    "link_command",
    "device_code",
    "tuning",
    "quantization",
    "lowrank",
    "hash_attention",
    "float_ops",
    "energy",
    "weights_bytes",
]


def tvm_manifest() -> Manifest:
    return Manifest(
        **COMMON,
        library="model.so",
        linker="system cc",
        link_command=None,
        tuning={"trials": 8},
        quantization=None,
        lowrank=None,
        hash_attention=None,
        float_ops=[],
        energy={"total_uj": 1.0},
        extra={"device_code": None, "weights_bytes": 64},
    )


def test_tvm_manifest_keys_in_the_order_compile_wrote_them():
    body = tvm_manifest().to_json()
    assert list(body) == TVM_KEYS
    assert body["weights_bytes"] == 64 and body["tuning"] == {"trials": 8} and body["linker"] == "system cc"


def test_core_ml_manifest_keys_in_the_order_export_wrote_them():
    m = Manifest(**COMMON, library="model.mlpackage", lowrank={"layers": []}, energy={}, extra={"coreml": {"ops": {}}})
    keys = [k for k in TVM_KEYS if k not in ("device_code", "weights_bytes")] + ["coreml"]
    assert list(m.to_json()) == keys
    assert m.to_json()["linker"] is None and m.to_json()["coreml"] == {"ops": {}}


def test_unknown_sections_follow_and_typed_fields_are_not_extra():
    m = Manifest(**COMMON, library="m.so", extra={"zeta": 1, "alpha": 2})
    assert list(m.to_json())[-2:] == ["zeta", "alpha"]
    with pytest.raises(ValueError, match="typed fields"):
        Manifest(**COMMON, library="m.so", extra={"library": "x"}).to_json()


def test_finish_seals_a_manifest_like_the_dict(tmp_path):
    sealed = []
    for i, manifest in enumerate((tvm_manifest(), tvm_manifest().to_json())):
        staging = tmp_path / f"staging{i}"
        staging.mkdir()
        (staging / "model.so").write_bytes(b"library")
        sealed.append((finish(staging, tmp_path / f"art{i}", manifest) / MANIFEST).read_bytes())
    assert sealed[0] == sealed[1]
    read = read_verified(tmp_path / "art0")
    again = Manifest.from_json(read)
    assert again.library == "model.so" and again.extra["weights_bytes"] == 64
    assert again.extra["files"] == {"model.so": json.loads(sealed[0])["files"]["model.so"]}
    assert again.to_json() == {k: read[k] for k in again.to_json()}
