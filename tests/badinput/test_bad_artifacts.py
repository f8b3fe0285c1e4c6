"""Tampered, resealed, truncated and foreign artifacts: refused before any library is loaded.

"Resealed" cases are the hostile ones: the manifest is edited and its self-checksum recomputed
(anyone can), so only the containment and schema checks (and signatures) stand between the
edit and a ``dlopen``. The canary library creates a marker file when loaded: it must never exist."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from badinput_support import VOCAB, cli, one_error_line

import edgecompile
from edgecompile.errors import ArtifactError, SignatureError
from edgecompile.runtime.manifest import seal


def reseal(art, edit) -> None:
    m = json.loads((art / "manifest.json").read_text())
    edit(m)
    (art / "manifest.json").write_bytes(seal(m))


def _del(*keys):
    def edit(m):
        d = m
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]

    return edit


def _set(value, *keys):
    def edit(m):
        d = m
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return edit


RESEALED = {
    "no inputs": (_del("inputs"), "lists no inputs"),
    "inputs empty": (_set([], "inputs"), "lists no inputs"),
    "inputs a dict": (_set({"ids": 1}, "inputs"), "lists no inputs"),
    "input without dtype": (_del("inputs", 0, "dtype"), "malformed entry in inputs"),
    "input dtype unknown": (_set("float128", "inputs", 0, "dtype"), "malformed entry in inputs"),
    "input shape negative": (_set([1, -4], "inputs", 0, "shape"), "malformed entry in inputs"),
    "input shape a string": (_set("1x4", "inputs", 0, "shape"), "malformed entry in inputs"),
    "input shape of floats": (_set([1.0, 4.0], "inputs", 0, "shape"), "malformed entry in inputs"),
    "input name a number": (_set(7, "inputs", 0, "name"), "malformed entry in inputs"),
    "valid_range three values": (_set([0, 1, 2], "inputs", 0, "valid_range"), "malformed valid_range"),
    "valid_range reversed": (_set([49, 0], "inputs", 0, "valid_range"), "malformed valid_range"),
    "valid_range strings": (_set(["0", "49"], "inputs", 0, "valid_range"), "malformed valid_range"),
    "no outputs": (_del("outputs"), "lists no outputs"),
    "output shape null": (_set(None, "outputs", 0, "shape"), "malformed entry in outputs"),
    "no target": (_del("target"), "no valid target"),
    "target a string": (_set("native", "target"), "no valid target"),
    "target without arch": (_del("target", "arch"), "no valid target"),
    "cpu_features a string": (_set("avx2", "target", "cpu_features"), "cpu_features must be a list"),
    "no library": (_del("library"), "file name must be a non-empty string"),
    "library a number": (_set(3, "library"), "file name must be a non-empty string"),
    "library unlisted": (_set("other.so", "library"), "not one of its checksummed files"),
    "library absolute": (_set("/usr/lib/x86_64-linux-gnu/libc.so.6", "library"), "not a plain file name"),
    "library ..": (_set("../art/model.so", "library"), "not a plain file name"),
    "library ./": (_set("./model.so", "library"), "not a plain file name"),
    "library with backslash": (_set("..\\model.so", "library"), "not a plain file name"),
    "library with NUL": (_set("model.so\x00.txt", "library"), "not a plain file name"),
    "files empty": (_set({}, "files"), "lists no files"),
    "files a list": (_set(["model.so"], "files"), "lists no files"),
    "file digest a number": (_set({"model.so": 5}, "files"), "lists no files"),
    "files absolute": (lambda m: m["files"].update({"/etc/passwd": "0" * 64}), "not a plain file name"),
    "files ..": (lambda m: m["files"].update({"../x": "0" * 64}), "not a plain file name"),
    "files //": (lambda m: m["files"].update({"a//b": "0" * 64}), "not a plain file name"),
    "device code outside": (_set([{"file": "../k.fatbin", "source_sha256": "x"}], "device_code"), "plain file name"),
    "device code a bool": (_set(True, "device_code"), "device_code must be a list"),
    "device code unlisted": (_set([{"file": "k.fatbin", "source_sha256": "x"}], "device_code"), "not one of its"),
    "weights section a list": (_set([], "weights"), "malformed weights section"),
    "weights file unlisted": (_set("other.bin", "weights", "file"), "not one of its checksummed files"),
    "weights file ..": (_set("../weights.bin", "weights", "file"), "not a plain file name"),
    "weights file absolute": (_set("/dev/zero", "weights", "file"), "not a plain file name"),
    "weights file is the library": (_set("model.so", "weights", "file"), "holds .* bytes, the manifest says"),
    "weights bytes negative": (_set(-1, "weights", "bytes"), "non-negative integer"),
    "weights bytes larger than the file": (
        lambda m: m["weights"].update(bytes=m["weights"]["bytes"] + 4096), "holds .* bytes, the manifest says"),
    "weight offset unaligned": (_set(4, "weights", "tensors", 0, "offset"), "weight tensor 0 is malformed"),
    "weight past the end": (_set(1 << 40, "weights", "tensors", 0, "offset"), "lies outside weights.bin"),
    "weight shape grown": (_set([1 << 20, 1 << 10], "weights", "tensors", 0, "shape"), "lies outside weights.bin"),
    "weight dtype unknown": (_set("float128", "weights", "tensors", 0, "dtype"), "weight tensor 0 is malformed"),
    "weight shape negative": (_set([-1, 8], "weights", "tensors", 0, "shape"), "weight tensor 0 is malformed"),
    "format other": (_set("onnx", "format"), "not an edgecompile manifest"),
    "format_version 4": (_set(4, "format_version"), "format version 4 is not supported"),
    "format_version string": (_set("1", "format_version"), "is not supported"),
}


@pytest.mark.parametrize("case", sorted(RESEALED))
def test_resealed_manifest_is_refused_before_loading(art_copy, canary_lib, case):
    edit, msg = RESEALED[case]
    reseal(art_copy, edit)
    with pytest.raises(ArtifactError, match=msg):
        edgecompile.load(art_copy)
    assert not canary_lib[1].exists()


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink-inside", "symlinked-manifest-folder"])
def test_foreign_library_is_never_loaded(art_copy, canary_lib, where, tmp_path):
    lib, marker = canary_lib
    if where == "absolute":
        reseal(art_copy, _set(str(lib), "library"))
    elif where == "dotdot":
        shutil.copy(lib, art_copy.parent / "evil.so")
        reseal(art_copy, lambda m: (m.update(library="../evil.so"), m["files"].update({"../evil.so": "0"})))
    elif where == "symlink-inside":  # listed with the evil library's digest, but a link out of the artifact
        from edgecompile.runtime.manifest import sha256_file

        (art_copy / "evil.so").symlink_to(lib)
        reseal(art_copy, lambda m: (m.update(library="evil.so"), m["files"].update({"evil.so": sha256_file(lib)})))
    else:
        real = tmp_path / "real"
        real.mkdir()
        shutil.copy(lib, real / "model.so")
        os.remove(art_copy / "model.so")
        (art_copy / "model.so").symlink_to(real / "model.so")
    with pytest.raises(ArtifactError):
        edgecompile.load(art_copy)
    assert not marker.exists(), "the foreign library's constructor ran"


def test_a_listed_foreign_library_needs_a_signature_to_be_refused(art_copy, canary_lib, keys):
    """An artifact is code: a folder holding a library its manifest lists and checksums is loadable
    by design. What refuses a swapped one is a required signature — checked before the load."""
    from edgecompile.runtime.manifest import sha256_file

    shutil.copy(canary_lib[0], art_copy / "model.so")
    reseal(art_copy, lambda m: m["files"].update({"model.so": sha256_file(art_copy / "model.so")}))
    with pytest.raises(SignatureError, match="not signed"):
        edgecompile.load(art_copy, trusted_keys=[keys["a"].with_name("a.pub")])
    assert not canary_lib[1].exists()


CORRUPT_FILES = {
    "manifest empty": lambda a: (a / "manifest.json").write_bytes(b""),
    "manifest binary": lambda a: (a / "manifest.json").write_bytes(os.urandom(300)),
    "manifest truncated": lambda a: (a / "manifest.json").write_bytes((a / "manifest.json").read_bytes()[:100]),
    "manifest a list": lambda a: (a / "manifest.json").write_text("[1, 2]"),
    "manifest deeply nested": lambda a: (a / "manifest.json").write_text("[" * 100000 + "]" * 100000),
    "manifest a directory": lambda a: ((a / "manifest.json").unlink(), (a / "manifest.json").mkdir()),
    "manifest a symlink": lambda a: (
        shutil.move(a / "manifest.json", a.parent / "m.json"),
        (a / "manifest.json").symlink_to(a.parent / "m.json"),
    ),
    "manifest missing": lambda a: (a / "manifest.json").unlink(),
    "manifest edited, not resealed": lambda a: (a / "manifest.json").write_text(
        (a / "manifest.json").read_text().replace('"float32"', '"float16"', 1)
    ),
    "library one byte flipped": lambda a: _flip(a / "model.so", 4096),
    "library truncated": lambda a: (a / "model.so").write_bytes((a / "model.so").read_bytes()[:1000]),
    "library empty": lambda a: (a / "model.so").write_bytes(b""),
    "library missing": lambda a: (a / "model.so").unlink(),
    "library a directory": lambda a: ((a / "model.so").unlink(), (a / "model.so").mkdir()),
    "artifact is a file": lambda a: (shutil.rmtree(a), a.write_text("x")),
}


def _flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case", sorted(CORRUPT_FILES))
def test_corrupt_artifact_is_one_clear_error(art_copy, case):
    CORRUPT_FILES[case](art_copy)
    line = one_error_line(cli("run", art_copy, "--input", "x=none.npy"))
    assert str(art_copy.name) in line or "manifest" in line or "artifact" in line


# --- signatures ---------------------------------------------------------------------------------


@pytest.fixture
def signed(art_copy, keys):
    from edgecompile.artifact.signing import sign_artifact

    sign_artifact(art_copy, keys["a"])
    return art_copy


def test_signed_artifact_loads_with_its_key_and_runs(signed, keys, embed_feeds, embed_artifact):
    model = edgecompile.load(signed, trusted_keys=[keys["a"].with_name("a.pub")])
    ref = edgecompile.load(embed_artifact).run(embed_feeds)
    assert np.array_equal(model.run(embed_feeds)["y"], ref["y"])


@pytest.mark.parametrize("pure", [False, True], ids=["openssl", "plain-python"])
@pytest.mark.parametrize("offset", [0, 17, 200, -40, -2])
def test_one_flipped_manifest_byte_breaks_the_signature(signed, keys, monkeypatch, pure, offset):
    if pure:
        monkeypatch.setenv("EDGECOMPILE_PURE_ED25519", "1")
    _flip(signed / "manifest.json", offset)
    with pytest.raises(SignatureError, match="does not verify"):
        edgecompile.load(signed, trusted_keys=[keys["a"].with_name("a.pub")])


@pytest.mark.parametrize("offset", [0, 1000, -1])
def test_one_flipped_library_byte_is_refused_when_signed(signed, keys, offset):
    _flip(signed / "model.so", offset)
    with pytest.raises(ArtifactError, match="modified or corrupted"):
        edgecompile.load(signed, trusted_keys=[keys["a"].with_name("a.pub")])


SIGNATURE_CASES = {
    "unsigned": (lambda a: (a / "manifest.sig").unlink(), "not signed"),
    "other key": (None, "not among the trusted keys"),
    "sig garbage": (lambda a: (a / "manifest.sig").write_text("garbage"), "malformed"),
    "sig wrong algorithm": (
        lambda a: (a / "manifest.sig").write_text((a / "manifest.sig").read_text().replace('"ed25519"', '"rsa"')),
        "malformed",
    ),
    "sig short": (
        lambda a: (a / "manifest.sig").write_text(
            json.dumps({"algorithm": "ed25519", "key_id": "x", "signature": "AAAA"})
        ),
        "malformed",
    ),
    "sig a directory": (lambda a: ((a / "manifest.sig").unlink(), (a / "manifest.sig").mkdir()), "not a regular"),
    "sig from another artifact": (
        lambda a: (a / "manifest.sig").write_bytes(_other_signature(a)),
        "does not verify",
    ),
}


def _other_signature(art) -> bytes:
    """A valid signature by key a, over a different manifest (the one before a reseal)."""
    sig = (art / "manifest.sig").read_bytes()
    reseal(art, _set({"note": "edited"}, "extra_section"))
    return sig


@pytest.mark.parametrize("case", sorted(SIGNATURE_CASES))
def test_bad_signature_is_refused(signed, keys, case):
    edit, msg = SIGNATURE_CASES[case]
    trusted = [keys["b"].with_name("b.pub")] if case == "other key" else [keys["a"].with_name("a.pub")]
    if edit:
        edit(signed)
    with pytest.raises(SignatureError, match=msg):
        edgecompile.load(signed, trusted_keys=trusted)


def test_signature_is_optional_without_trusted_keys(signed, embed_feeds):
    assert "y" in edgecompile.load(signed).run(embed_feeds)


def test_cli_require_signature_and_env_keys(art_copy, keys, monkeypatch):
    line = one_error_line(cli("bench", art_copy, "--runs", 1, "--require-signature"))
    assert "needs a public key" in line
    monkeypatch.setenv("EDGECOMPILE_TRUSTED_KEYS", str(keys["a"].with_name("a.pub")))
    assert "not signed" in one_error_line(cli("bench", art_copy, "--runs", 1))
    assert cli("sign", art_copy, "--key", keys["a"]).exit_code == 0
    assert cli("bench", art_copy, "--runs", 1).exit_code == 0


def test_package_verifies_before_bundling_and_signs_the_bundled_manifest(art_copy, keys, tmp_path, embed_feeds):
    pub_a = keys["a"].with_name("a.pub")
    assert "not signed" in one_error_line(cli("package", art_copy, "-o", tmp_path / "b0", "--trusted-key", pub_a))
    assert not (tmp_path / "b0").exists()
    r = cli("package", art_copy, "-o", tmp_path / "b1", "--sign", keys["a"])
    assert r.exit_code == 0, r.output
    model = edgecompile.load(tmp_path / "b1" / "model", trusted_keys=[pub_a])
    assert np.isfinite(model.run(embed_feeds)["y"]).all()
    with pytest.raises(SignatureError, match="not among the trusted keys"):
        edgecompile.load(tmp_path / "b1" / "model", trusted_keys=[keys["b"].with_name("b.pub")])


def test_a_widened_valid_range_cannot_make_the_model_read_past_its_table(art_copy, embed_feeds, embed_artifact):
    """The runtime's range check trusts the manifest; the compiled gather does not: ids past the table
    read its last row (negative ones past -rows: the first), never memory beyond it."""
    reseal(art_copy, _set([-(10**13), 10**13], "inputs", 0, "valid_range"))
    ref = edgecompile.load(embed_artifact)
    wide = edgecompile.load(art_copy)
    for bad, clamped in ((10**12, VOCAB - 1), (VOCAB + 5000, VOCAB - 1), (-(10**12), 0)):
        ids = embed_feeds["ids"].copy()
        ids[0, 1] = bad
        want = ref.run({**embed_feeds, "ids": np.where(ids == bad, clamped, ids)})["y"]
        np.testing.assert_array_equal(wide.run({**embed_feeds, "ids": ids})["y"], want)


def test_a_signature_file_in_another_encoding_of_the_same_bytes_is_refused(signed, keys):
    """base64 ignores the padding bits of its last character and JSON its layout: either would let a
    changed manifest.sig carry the same signature. Only the bytes signing writes are read."""
    import base64

    from edgecompile.runtime.signature import SIGNATURE

    record = json.loads((signed / SIGNATURE).read_text())
    text = record["signature"]  # 64 bytes: 86 characters and "==", the last one's low 4 bits padding
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(text[85])
    record["signature"] = text[:85] + alphabet[last ^ 1] + text[86:]
    assert base64.b64decode(record["signature"]) == base64.b64decode(text)  # the same signature bytes
    (signed / SIGNATURE).write_text(json.dumps(record, sort_keys=True, indent=2) + "\n")
    with pytest.raises(SignatureError, match="malformed"):
        edgecompile.load(signed, trusted_keys=[keys["a"].with_name("a.pub")])
    (signed / SIGNATURE).write_text(json.dumps(dict(record, signature=text), indent=4))  # same fields, new layout
    with pytest.raises(SignatureError, match="malformed"):
        edgecompile.load(signed, trusted_keys=[keys["a"].with_name("a.pub")])


@pytest.fixture(scope="module")
def ranged_art(tmp_path_factory):
    from helpers import EXAMPLE_ONNX

    shapes = {"input_ids": "1x1..16", "attention_mask": "1x1..16"}
    return edgecompile.compile(EXAMPLE_ONNX, "native", tmp_path_factory.mktemp("rg") / "a", input_shapes=shapes,
                               buckets={"seq": [8, 16]})  # fmt: skip


def _build_field(value, key):
    return lambda m: m["ranged"]["builds"][0].update({key: value})


RANGED_EDITS = {
    "build library outside the artifact": (_build_field("../evil.so", "library"), "not a plain file name"),
    "build library not listed": (_build_field("other.so", "library"), "not one of its checksummed files"),
    "build weight index past the weights": (_build_field([0, 9999], "weights"), "weight tensor the weights section"),
    "build sizes without the group": (_build_field({"len": 8}, "sizes"), "do not name the artifact's groups"),
    "ranged section not a dict": (lambda m: m.update(ranged=[1]), "malformed ranged section"),
    "library none of the builds": (
        lambda m: m["ranged"]["builds"][1].update(library=m["ranged"]["builds"][0]["library"]),
        "none of the ranged builds",
    ),
}


@pytest.mark.parametrize("case", sorted(RANGED_EDITS))
def test_tampered_ranged_section_is_refused(ranged_art, tmp_path, case):
    edit, msg = RANGED_EDITS[case]
    art = tmp_path / "a"
    shutil.copytree(ranged_art, art)
    reseal(art, edit)
    with pytest.raises(ArtifactError, match=msg):
        edgecompile.load(art)
