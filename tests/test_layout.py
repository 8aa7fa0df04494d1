"""The package's layout: the library never loads the application (fastgame.trainer), and the
trainer modules' old import paths give the modules of the new ones."""
import importlib
import subprocess
import sys

import pytest

from fastgame._moved import MOVED

LIBRARY = ["fastgame", "fastgame.optim", "fastgame.linalg", "fastgame.ops", "fastgame.games", "fastgame.losses",
           "fastgame.nn", "fastgame.graphs", "fastgame.diagnostics", "fastgame.graph_guard", "fastgame.doctor"]


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


# ---- the size of functions, read from the source (ast); the import graph: tests/test_import_graph.py ----
import ast  # noqa: E402
import pathlib  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]

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


# ---- docs/architecture.md is checked against the tree -----------------------------------------
import re  # noqa: E402

ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _blocks(text: str) -> list[str]:
    return re.findall(r"```\n(.*?)```", text, re.S)


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_import_between_parts_is_in_the_diagram():
    from tests.test_import_graph import import_graph
    documented = set()
    for line in _blocks(ARCHITECTURE.read_text())[0].splitlines():
        if "->" in line:
            src, _, dst = line.partition("->")
            documented |= {(src.strip(), d.strip()) for d in dst.split("(")[0].split(",") if d.strip()}
    real = {(_part(a), _part(b)) for a, bs in import_graph().items() for b in bs if _part(a) != _part(b)}
    assert real <= documented, sorted(real - documented)
    assert ("linalg", "optim") not in documented  # the diagram states the layers' direction


def test_the_trainer_modules_import_only_deeper_ones():
    from tests.test_import_graph import import_graph
    level = {}
    for line in _blocks(ARCHITECTURE.read_text())[1].splitlines():
        names = re.findall(r"(\w+)\.py", line.strip().split("   ")[0])  # before its description
        for name in names:
            level[f"fastgame.trainer.{name}"] = (len(line) - len(line.lstrip())) // 2
    trainer = {m for m in import_graph() if m.startswith("fastgame.trainer.")}
    assert trainer == set(level), sorted(trainer ^ set(level))  # every module placed, none invented
    wrong = [f"{a} -> {b}" for a, bs in import_graph().items() if a in level for b in bs
             if b in level and level[b] <= level[a]]
    assert not wrong, wrong


def test_every_file_the_contributor_table_names_exists():
    table = ARCHITECTURE.read_text().split("## To add X, touch these files", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| a")]
    assert len(rows) == 7, rows
    for row in rows:
        paths = [p for p in re.findall(r"`([\w./<>]+\.(?:py|cpp|cu|h))`", row)]
        assert paths, row
        for path in paths:
            if "<" in path:  # a new file: its folder exists
                assert (ROOT / path).parent.is_dir(), (row[:40], path)
            else:
                assert (ROOT / path).is_file(), (row[:40], path)
    assert "fastgame/trainer/options.py" in next(r for r in rows if "trainer option" in r)
