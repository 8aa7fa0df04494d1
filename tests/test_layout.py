"""The package's layout: the library never loads the application (fastgame.trainer), and the
trainer modules' old import paths give the modules of the new ones."""
import importlib
import subprocess
import sys

import pytest

from fastgame._moved import MOVED

LIBRARY = ["fastgame", "fastgame.optim", "fastgame.linalg", "fastgame.ops", "fastgame.games", "fastgame.losses",
           "fastgame.nn", "fastgame.graphs", "fastgame.diagnostics"]


def test_the_library_does_not_import_the_trainer():
    code = ("import sys, importlib\n"
            f"for name in {LIBRARY!r}: importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.startswith('fastgame.trainer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_paths_give_the_moved_module(old):
    module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])
    assert module.__name__ == MOVED[old]


# ---- the import graph and the size of functions, read from the source (ast) --------------------
import ast  # noqa: E402
import pathlib  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted((ROOT / "fastgame").rglob("*.py"))}


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The fastgame modules ``name`` imports (at any level of the file, functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
            found |= subs or {base}
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the fastgame modules it imports."""
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_the_graph_reader_sees_relative_imports():
    graph = import_graph()
    assert "fastgame.trainer.config" in graph["fastgame.trainer.train"]
    assert "fastgame.losses" in graph["fastgame.trainer.steppers"]


def test_no_module_imports_one_that_imports_it_back():
    """No cycle in the import graph of fastgame/ (a package's __init__ re-exporting its modules is
    the package, not a cycle: only edges between modules count, and a module's own package is not
    an edge of it)."""
    graph = import_graph()
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join(path + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    assert not cycles, "\n".join(sorted(set(cycles))[:10])


MAX_FUNCTION_LINES = 80


def long_functions(paths) -> list[str]:
    """The functions of the files ``paths`` longer than :data:`MAX_FUNCTION_LINES` (from ``def`` to their last line)."""
    long = []
    for path in paths:
        for node in ast.walk(ast.parse(pathlib.Path(path).read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path}:{node.lineno} {node.name} ({lines} lines)")
    return long


def test_no_function_over_80_lines():
    """The project's rule, checked on every function of fastgame/, bench/ and examples/."""
    paths = [p.relative_to(ROOT) for folder in ("fastgame", "bench", "examples")
             for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(paths) > 50
    assert not long_functions([ROOT / p for p in paths])


def test_the_function_length_check_finds_a_long_method(tmp_path):
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"class A:\n    def short(self):\n        pass\n\n    def f(self):\n{body}\n")
    assert long_functions([tmp_path / "m.py"]) == [f"{tmp_path / 'm.py'}:5 f ({MAX_FUNCTION_LINES + 1} lines)"]
