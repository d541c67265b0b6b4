"""The product's layers point down: cells, then reports (stored rows to tables and figures), then
tasks, then bench (the runner, store and command line). A module may import its own package and the
packages below it, never one above: this test reads every import, at module level and inside
functions, and names each that runs upward."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("cells", "reports", "tasks", "bench")  # lowest first


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def upward_imports() -> list[str]:
    wrong = []
    for layer, package in enumerate(LAYERS):
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, imported in imports(path):
                if imported in LAYERS and LAYERS.index(imported) > layer:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported} (a layer above {package})")
    return wrong


def test_no_module_imports_a_layer_above_its_own():
    wrong = upward_imports()
    assert not wrong, "imports that run upward:\n" + "\n".join(wrong)


def test_the_check_finds_an_upward_import(tmp_path, monkeypatch):
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "bad.py").write_text("def f():\n    from bench.store import ResultsStore\n")
    for package in LAYERS[1:]:
        (tmp_path / package).mkdir()
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert upward_imports() == ["cells/bad.py:2 imports bench (a layer above cells)"]
