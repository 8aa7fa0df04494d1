"""The package's import graph has no cycle: no module under fastgame/ imports a module that imports
it back, directly or through others (read from the source with ast, every import statement counted:
at the top, inside functions and under TYPE_CHECKING alike)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "fastgame"


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` by dotted name (a package by its own name, for its __init__.py)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(name: str, known: dict[str, Path]) -> bool:
    return known.get(name, Path()).name == "__init__.py"


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports: ``from .x import y`` names module ``x`` and,
    where ``y`` is a submodule, ``x.y`` too; ``import a.b`` names ``a.b``. A module's own parent
    packages are left out (they are always imported before it, so importing them runs nothing)."""
    base = name if _is_package(name, known) else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")[:len(base.split(".")) - (node.level - 1)]
                source = ".".join(anchor + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets.add(source)
            targets.update(f"{source}.{alias.name}" for alias in node.names)
    parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return {t for t in targets if t in known and t != name and t not in parents}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    known = modules(root, package)
    return {name: imported(name, path, known) for name, path in known.items()}


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert "fastgame.optim.base" in graph and "fastgame.linalg.cg" in graph["fastgame.optim.cgd"]
    found = cycles(graph)
    assert not found, "modules that import each other (directly or through others): " + "; ".join(
        " <-> ".join(c) for c in found)


@pytest.mark.parametrize("files,cycle", [
    ({"a.py": "from .b import x\n", "b.py": "from .a import y\n"}, [["pkg.a", "pkg.b"]]),
    ({"a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import x\n",
      "b.py": "def f():\n    from .c import z\n", "c.py": "import pkg.a\n"}, [["pkg.a", "pkg.b", "pkg.c"]]),
    ({"sub/__init__.py": "from .m import f\n", "sub/m.py": "from . import n\nfrom .. import a\n",
      "sub/n.py": "", "a.py": "from .sub import m\n"}, [["pkg.a", "pkg.sub", "pkg.sub.m"]]),
    ({"sub/__init__.py": "from .m import f\n", "sub/m.py": "from . import n\n", "sub/n.py": "from .. import a\n",
      "a.py": "import os\n"}, []),
])
def test_the_check_finds_cycles(tmp_path, files, cycle):
    for rel, text in {"__init__.py": "", **files}.items():
        (tmp_path / "pkg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / rel).write_text(text)
    assert cycles(import_graph(tmp_path, "pkg")) == cycle
