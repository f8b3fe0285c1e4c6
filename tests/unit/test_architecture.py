"""The shape rules of ARCHITECTURE.md that neither ruff nor import-linter checks: module and function
length, and no private name imported across modules (by the package, its tests or benchmarks)."""

from __future__ import annotations

import ast
import shutil
import subprocess

import pytest
from helpers import ROOT

PACKAGE = ROOT / "edgecompile"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
CLI = PACKAGE / "cli"  # its commands are option declarations; ruff's gate exempts it too


def _modules(*roots):
    for root in roots:
        yield from sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_over_the_limit():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules(PACKAGE)
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_the_limit():
    long = []
    for path in _modules(PACKAGE):
        if CLI in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_private_name_imported_across_modules():
    found = []
    for path in _modules(PACKAGE, ROOT / "tests", ROOT / "benchmarks", ROOT / "examples"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgecompile"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}: {', '.join(private)}")
    assert not found, f"private names imported across modules: {found}"


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The scans above find a long function and a private import when there is one."""
    src = "from edgecompile.api import _secret\n\ndef f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    tree = ast.parse(src)
    funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    assert funcs[0].end_lineno - funcs[0].lineno + 1 > MAX_FUNCTION_LINES
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert imports[0].names[0].name == "_secret"


def test_import_layers_hold():
    """The import-linter contracts of pyproject.toml (layers, runtime isolation, no cycles)."""
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("lint-imports is not installed (pip install -e '.[test]' installs it)")
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
