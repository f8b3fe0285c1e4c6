"""The runtime stays the runtime: ``edgecompile.runtime``'s import closure holds none of the compiler
(only the package root, errors and version beside the runtime itself) and imports nothing outside
the standard library but numpy, ml_dtypes and the pieces of TVM's runtime it imports today. The
device bundle carries exactly the files of that closure."""

from __future__ import annotations

import sys
import textwrap

from edgecompile.artifact.bundle import own_files
from edgecompile.artifact.closure import import_closure

OWN_ALLOWED = {"edgecompile", "edgecompile.errors", "edgecompile.version"}  # plus edgecompile.runtime[.*]
# third-party packages whose every module the device may import (it installs them itself)
PACKAGES_ALLOWED = {"numpy", "ml_dtypes"}
# optional: used when the device has it, else a fallback (signature verification: runtime/ed25519.py)
OPTIONAL_ALLOWED = {"cryptography"}
# TVM: exactly the modules the runtime imports: tvm_ffi, which loads libtvm_runtime.so; not the tvm
# package (~40 MB and ~0.3 s a process; runtime/tvm_ffi_runtime.py). A new one is a decision: check
# `edgecompile package --python` still runs.
TVM_ALLOWED = {"tvm_ffi", "tvm_ffi.libinfo"}


def _allowed_external(name: str) -> bool:
    top = name.split(".")[0]
    return top in sys.stdlib_module_names or top in PACKAGES_ALLOWED | OPTIONAL_ALLOWED or name in TVM_ALLOWED


def test_runtime_imports_only_the_runtime_errors_and_version():
    closure = import_closure("edgecompile.runtime")
    extra = [m for m in closure.own if m not in OWN_ALLOWED and m.split(".")[:2] != ["edgecompile", "runtime"]]
    assert not extra, f"the runtime imports compiler modules: {extra}"
    assert OWN_ALLOWED <= set(closure.own) and "edgecompile.runtime.model" in closure.own


def test_runtime_third_party_imports_are_allowed():
    closure = import_closure("edgecompile.runtime")
    bad = [m for m in closure.external if not _allowed_external(m)]
    assert not bad, f"the runtime imports modules outside its allow-list: {bad}"
    assert "numpy" in closure.external and "tvm_ffi" in closure.external
    assert not any(m == "tvm" or m.startswith("tvm.") for m in closure.external)


def test_bundle_carries_the_closure():
    files = own_files()
    assert files[:3] == ["__init__.py", "errors.py", "version.py"]
    assert "runtime/model.py" in files and "runtime/manifest.py" in files
    assert all(f.startswith("runtime/") for f in files[3:])


def test_closure_rules(tmp_path):
    """Parents count; lazy imports count in the walked package only; TYPE_CHECKING never."""
    pkg = tmp_path / "top"
    (pkg / "rt").mkdir(parents=True)
    (pkg / "compiler").mkdir()
    (pkg / "__init__.py").write_text("import json\n\ndef compile():\n    from top.compiler import build\n")
    (pkg / "compiler" / "__init__.py").write_text("")
    (pkg / "compiler" / "build.py").write_text("import onnx\n")
    (pkg / "errors.py").write_text("")
    (pkg / "rt" / "__init__.py").write_text("from .model import load\n")
    (pkg / "rt" / "model.py").write_text(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING
            from top import errors
            if TYPE_CHECKING:
                import torch
            try:
                import numpy as np
            except ImportError:
                np = None

            def load():
                import tvm.runtime
            """
        )
    )
    closure = import_closure("top.rt", tmp_path)
    assert closure.own == ("top", "top.errors", "top.rt", "top.rt.model")
    assert closure.external == ("json", "numpy", "tvm.runtime", "typing")
    assert closure.files == ("__init__.py", "errors.py", "rt/__init__.py", "rt/model.py")
