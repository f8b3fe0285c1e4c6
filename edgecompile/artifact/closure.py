"""The import closure of a package, read from its source with :mod:`ast` (nothing is imported).

The device bundle carries our runtime's Python files (:mod:`edgecompile.artifact.bundle`), and a
test holds the runtime to an allow-list of imports: both read :func:`import_closure`. Starting
from every module of the package, it follows the imports of our own top-level package
(``edgecompile.*``) and collects every other import as written (``numpy``, ``tvm.runtime.vm``).

Which imports count:

- importing ``a.b.c`` runs ``a`` and ``a.b`` first: parent packages are part of the closure;
- in the package's own modules every import counts, those inside functions too (the device calls
  those functions: ``import tvm`` happens in one);
- in the other modules reached (the package root, ``edgecompile.errors``, ...) only the imports
  that run on import count, not those inside functions (``edgecompile.compile`` imports the
  compiler lazily; the runtime never calls it);
- imports under ``if TYPE_CHECKING:`` never run and do not count; nor does ``__future__``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Closure:
    own: tuple[str, ...]  # our modules (``edgecompile``, ``edgecompile.errors``, ...), sorted
    external: tuple[str, ...]  # every other module imported, as written (``tvm.runtime.vm``), sorted
    files: tuple[str, ...]  # the own modules' files relative to the top package directory


def source_root() -> Path:
    """The directory holding our top-level package (``edgecompile/``)."""
    return Path(__file__).resolve().parents[2]


def module_file(name: str, root: Path) -> Path | None:
    """The source file of module ``name`` under ``root`` (a package's ``__init__.py``), or None."""
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def package_modules(package: str, root: Path) -> list[str]:
    """Every module of ``package`` (its subpackages' too), by its source files."""
    init = module_file(package, root)
    if init is None or init.name != "__init__.py":
        raise ValueError(f"{package} is not a package under {root}")
    names = []
    for path in sorted(init.parent.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def import_closure(package: str = "edgecompile.runtime", root: Path | None = None) -> Closure:
    """The closure of ``package``'s imports within its top-level package (see the module docstring)."""
    root = root or source_root()
    top = package.split(".")[0]
    own: set[str] = set()
    external: set[str] = set()
    todo = list(package_modules(package, root))
    while todo:
        name = todo.pop()
        if name in own:
            continue
        path = module_file(name, root)
        if path is None:
            raise ValueError(f"{name} is imported but has no source under {root}")
        own.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        in_package = name == package or name.startswith(package + ".")
        for imported in _imports(path, name, in_functions=in_package, root=root):
            if imported.split(".")[0] == top:
                todo.append(imported)
            elif imported != "__future__":
                external.add(imported)
    files = sorted((_relative_file(n, root, top) for n in own), key=lambda f: ("/" in f, f))
    return Closure(tuple(sorted(own)), tuple(sorted(external)), tuple(files))


def _relative_file(name: str, root: Path, top: str) -> str:
    return module_file(name, root).relative_to(root / top).as_posix()


def _imports(path: Path, module: str, in_functions: bool, root: Path) -> Iterator[str]:
    """Absolute names of the modules ``path`` (module ``module``) imports; for ``from X import y``,
    ``X`` and, where it is a module with source under ``root``, ``X.y``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _import_nodes(ast.parse(path.read_text(), str(path)).body, in_functions):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            name = ".".join([*base, node.module] if node.module else base)
        else:
            name = node.module
        yield name
        for alias in node.names:
            if module_file(f"{name}.{alias.name}", root) is not None:
                yield f"{name}.{alias.name}"


def _import_nodes(body: list[ast.stmt], in_functions: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of ``body`` that run: nested blocks and classes always, function bodies
    only ``in_functions``, ``if TYPE_CHECKING:`` bodies never (their ``else`` does)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if in_functions:
                yield from _import_nodes(node.body, in_functions)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(node.orelse, in_functions)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(node, field, None) or ():
                    if isinstance(child, ast.stmt):
                        yield from _import_nodes([child], in_functions)
                    elif hasattr(child, "body"):  # except handlers, match cases
                        yield from _import_nodes(child.body, in_functions)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )
