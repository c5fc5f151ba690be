"""The package's import graph has one direction: no module imports, directly or through others, itself.

Every import counts, deferred ones inside functions included (a deferred import may delay an optional
heavy dependency, never hide a circle); only ``if TYPE_CHECKING:`` blocks are left out. Importing
``a.b.c`` also runs ``a/b/__init__.py``, so an edge to a module is also an edge to each package above it
that is not a package of the importer itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "sparkle_video"


def package_modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """``dotted name -> (file, is_package)`` for every module under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skip.update(id(n) for n in ast.walk(inner))
    return skip


def imported_names(module: str, is_pkg: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Dotted names an import statement may load (the module, and each ``from`` name as a submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = module.split(".")
        if not is_pkg:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{a.name}" for a in node.names]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``module -> modules of the package it imports`` (with the implicit parent-package edges)."""
    mods = package_modules(root)
    graph: dict[str, set[str]] = {}
    for module, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_nodes(tree)
        package = root.name
        own_packages = {module} | {module.rsplit(".", k)[0] for k in range(1, module.count(".") + 1)}
        deps: set[str] = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in skip:
                continue
            for name in imported_names(module, is_pkg, node):
                if name != package and not name.startswith(package + "."):
                    continue
                while name and name not in mods:  # ``from .x import func``: the module is ``.x``
                    name = name.rpartition(".")[0]
                while name:  # the module, and each package above it that the importer is not inside
                    if name not in own_packages:
                        deps.add(name)
                    name = name.rpartition(".")[0]
        graph[module] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert cycles == [], "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_few_modules_at_the_package_top():
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(top) <= 8, top


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        # the shape of the old ``catalog -> hub -> catalog`` circle, hidden in a deferred import
        (
            {
                "__init__.py": "",
                "catalog.py": "from .hub import fetch\n",
                "hub.py": "def fetch():\n    from .catalog import plan\n",
            },
            ["pkg.catalog", "pkg.hub"],
        ),
        # an absolute import through a package ``__init__`` that imports back
        (
            {
                "__init__.py": "",
                "models/__init__.py": "from ..pipelines.tiny import make\n",
                "models/configs.py": "",
                "pipelines/__init__.py": "",
                "pipelines/tiny.py": "import pkg.models.configs\n",
            },
            ["pkg.models", "pkg.pipelines.tiny"],
        ),
    ],
)
def test_the_check_sees_hidden_circles(tmp_path, files, cycle):
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert cycle in find_cycles(import_graph(tmp_path / "pkg"))


def test_type_checking_imports_do_not_count(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from .b import x\n")
    (tmp_path / "pkg" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import y\n"
    )
    assert find_cycles(import_graph(tmp_path / "pkg")) == []


def test_every_package_import_names_a_module():
    """An import of ``from ..gone import x`` (a module moved away) is caught here, before any import runs."""
    mods = package_modules()
    missing = []
    for module, (path, is_pkg) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                target = imported_names(module, is_pkg, node)[0]
            elif isinstance(node, ast.Import):
                target = node.names[0].name
            else:
                continue
            if (target == "sparkle_video" or target.startswith("sparkle_video.")) and target not in mods:
                missing.append(f"{module}: {target}")
    assert missing == []
