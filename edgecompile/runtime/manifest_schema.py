"""What a sound manifest looks like, beyond its checksum: the fields the runtime reads, typed, and
file names that cannot point outside the artifact.

The self-checksum only proves the manifest is the one sealed with it — anyone can reseal an edited
manifest. So nothing the runtime opens is taken on the manifest's word alone: every listed name is
a plain relative path (no absolute path, no ``..``, no backslash, no empty or hidden-by-encoding
part), every listed file is a regular file reached without following a symbolic link, and the
library (and any CUDA device code) the runtime will load is one of the listed, checksummed files.
Standard library only (the runtime and the device bundle import it).
"""

from __future__ import annotations

import stat
from pathlib import Path, PurePosixPath

from edgecompile.errors import ArtifactError

DTYPES = {"float32", "float16", "bfloat16", "float64", "int64", "int32", "uint32", "int16", "int8", "uint8", "bool"}
ITEMSIZE = {"float64": 8, "int64": 8, "float32": 4, "int32": 4, "uint32": 4, "float16": 2, "bfloat16": 2, "int16": 2}
WEIGHTS_ALIGNMENT = 64  # bytes; TVM refuses a tensor whose data is less aligned


def check_name(name: object, where: str) -> str:
    """``name`` if it is a plain relative POSIX path inside the artifact, else :class:`ArtifactError`."""
    if not isinstance(name, str) or not name:
        raise ArtifactError(f"{where}: a file name must be a non-empty string, got {name!r}")
    bad = next((c for c in name if c == "\\" or ord(c) < 32 or ord(c) == 127), None)
    if bad is not None or any(p in ("", ".", "..") for p in name.split("/")):
        raise ArtifactError(
            f"{where}: {name!r} is not a plain file name inside the artifact (absolute paths, '..', "
            "backslashes and control characters are refused): the manifest was edited"
        )
    return name


def check_regular(root: Path, name: str) -> Path:
    """``root/name``, refusing a symbolic link anywhere below ``root`` or anything but a regular file."""
    path = root
    for part in PurePosixPath(name).parts:
        path = path / part
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            raise ArtifactError(f"artifact is incomplete: {name} is missing from {root}") from None
        if stat.S_ISLNK(mode):
            raise ArtifactError(f"artifact file {name} is (or lies under) a symbolic link: refused")
    if not stat.S_ISREG(mode):
        raise ArtifactError(f"artifact file {name} is not a regular file: refused")
    return path


def check_fields(manifest: dict, mpath: Path) -> None:
    """The sections the runtime reads are present and typed; the library is a listed file."""
    files = manifest["files"]
    for name in files:
        check_name(name, f"{mpath} files")
    _check_target(manifest.get("target"), mpath)
    for kind in ("inputs", "outputs"):
        specs = manifest.get(kind)
        if not isinstance(specs, list) or not specs:
            raise ArtifactError(f"{mpath} lists no {kind}: the manifest was edited or is incomplete")
        for spec in specs:
            _check_spec(spec, kind, mpath)
    library = check_name(manifest.get("library"), f"{mpath} library")
    if library not in files and not any(n.startswith(library + "/") for n in files):
        raise ArtifactError(f"{mpath} names library {library!r}, which is not one of its checksummed files")
    if manifest.get("weights") is not None:
        check_weights(manifest["weights"], files, mpath)
    if manifest.get("ranged") is not None:
        check_ranged(manifest["ranged"], files, manifest.get("weights"), mpath)
    device_code = manifest.get("device_code")
    if device_code is not None and not isinstance(device_code, list):
        raise ArtifactError(f"{mpath}: device_code must be a list of files")
    for entry in device_code or []:
        name = entry.get("file") if isinstance(entry, dict) else None
        if check_name(name, f"{mpath} device_code") not in files:
            raise ArtifactError(f"{mpath} names device code {name!r}, which is not one of its checksummed files")


def _check_target(target: object, mpath: Path) -> None:
    if not isinstance(target, dict) or not all(isinstance(target.get(k), str) for k in ("name", "arch")):
        raise ArtifactError(f"{mpath} has no valid target (name, arch): the manifest was edited or is incomplete")
    features = target.get("cpu_features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ArtifactError(f"{mpath}: target cpu_features must be a list of names")


def _check_spec(spec: object, kind: str, mpath: Path) -> None:
    ok = (
        isinstance(spec, dict)
        and isinstance(spec.get("name"), str)
        and isinstance(spec.get("dtype"), str)
        and spec["dtype"] in DTYPES
        and isinstance(spec.get("shape"), list)
        and all(_is_int(d) and d >= 0 for d in spec["shape"])
    )
    if not ok:
        raise ArtifactError(f"{mpath}: malformed entry in {kind}: {str(spec)[:120]}")
    bounds = spec.get("valid_range")
    if bounds is not None and not (
        isinstance(bounds, list) and len(bounds) == 2 and all(_is_int(b) for b in bounds) and bounds[0] <= bounds[1]
    ):
        raise ArtifactError(f"{mpath}: malformed valid_range of {kind[:-1]} {spec['name']!r}: {bounds!r}")


def tensor_nbytes(entry: dict) -> int:
    """Bytes of a ``{"dtype", "shape"}`` tensor entry."""
    count = 1
    for d in entry["shape"]:
        count *= d
    return count * ITEMSIZE.get(entry["dtype"], 1)


def check_weights(section: object, files: dict, mpath: Path) -> None:
    """A ``weights`` section (:mod:`edgecompile.runtime.weights`) that names a listed file and whose
    tensors lie inside it, aligned."""
    if not isinstance(section, dict) or not isinstance(section.get("tensors"), list):
        raise ArtifactError(f"{mpath}: malformed weights section")
    name = check_name(section.get("file"), f"{mpath} weights")
    if name not in files:
        raise ArtifactError(f"{mpath} names weights file {name!r}, which is not one of its checksummed files")
    size = section.get("bytes")
    if not _is_int(size) or size < 0:
        raise ArtifactError(f"{mpath}: weights bytes must be a non-negative integer")
    for i, t in enumerate(section["tensors"]):
        ok = (
            isinstance(t, dict)
            and t.get("dtype") in DTYPES
            and isinstance(t.get("shape"), list)
            and all(_is_int(d) and d >= 0 for d in t["shape"])
            and _is_int(t.get("offset"))
            and t["offset"] >= 0
            and t["offset"] % WEIGHTS_ALIGNMENT == 0
        )
        if not ok or t["offset"] + tensor_nbytes(t) > size:
            raise ArtifactError(f"{mpath}: weight tensor {i} is malformed or lies outside {name}: {str(t)[:120]}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_ranged(section: object, files: dict, weights: dict | None, mpath: Path) -> None:
    """A ``ranged`` section whose builds name listed libraries and weight tensors that exist."""
    ok = isinstance(section, dict) and all(isinstance(section.get(k), t) for k, t in
                                           (("groups", dict), ("dims", list), ("builds", list)))  # fmt: skip
    if not ok or not section["builds"]:
        raise ArtifactError(f"{mpath}: malformed ranged section")
    count = len((weights or {}).get("tensors", []))
    for b in section["builds"]:
        if not isinstance(b, dict) or not isinstance(b.get("sizes"), dict) or not isinstance(b.get("weights"), list):
            raise ArtifactError(f"{mpath}: malformed build in the ranged section: {str(b)[:120]}")
        if check_name(b.get("library"), f"{mpath} ranged build") not in files:
            raise ArtifactError(f"{mpath} names library {b['library']!r}, which is not one of its checksummed files")
        if any(not isinstance(i, int) or not 0 <= i < count for i in b["weights"]):
            raise ArtifactError(f"{mpath}: a ranged build names a weight tensor the weights section lacks")
        if set(b["sizes"]) != set(section["groups"]):
            raise ArtifactError(f"{mpath}: a ranged build's sizes do not name the artifact's groups")
