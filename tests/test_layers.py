"""The house's shape, checked: imports point down the layers (the import-linter contract in pyproject.toml),
no two subpackages import each other, and every function in src/ fits on a screen (80 lines)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
BIN = Path(sys.executable).parent
MAX_FUNCTION_LINES = 80


def _contract_layers() -> list[str]:
    """The modules named in the `layers` contract, siblings (`a | b`) split."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    return [name.strip() for layer in layers for name in layer.split("|")]


def test_imports_point_down_the_layers() -> None:
    # This checkout's source, whatever pianoeval the venv has installed.
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [str(BIN / "lint-imports"), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout, proc.stdout[-3000:]


def _subpackage_graph() -> dict[str, set[str]]:
    """{subpackage: the subpackages it imports directly} over pianoeval's top-level modules."""
    graph = grimp.build_graph("pianoeval", cache_dir=None)
    children = sorted(graph.find_children("pianoeval"))
    return {
        a: {b for b in children if b != a and graph.direct_import_exists(importer=a, imported=b, as_packages=True)}
        for a in children
    }


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle found by a depth-first search (each as the path that closes it)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], node, nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return found


def test_cycle_search_finds_a_planted_cycle() -> None:
    # The search itself: a broken one would pass the real graph vacuously.
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_cycle_between_subpackages() -> None:
    edges = _subpackage_graph()
    assert edges["pianoeval.steps"], "the graph is empty: grimp read no imports"
    assert _cycles(edges) == []


def test_every_subpackage_is_in_a_layer() -> None:
    # A new subpackage outside the contract would escape the layer rule.
    missing = set(_subpackage_graph()) - set(_contract_layers())
    assert not missing, f"add {sorted(missing)} to the layers contract in pyproject.toml"


def _long_functions(root: Path, limit: int) -> list[str]:
    """'path:line name (N lines)' of every function or method under `root` longer than `limit` lines."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                n = node.end_lineno - start + 1
                if n > limit:
                    out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_long_function_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    assert _long_functions(tmp_path, MAX_FUNCTION_LINES) == [f"m.py:5 long ({MAX_FUNCTION_LINES + 1} lines)"]


def test_every_function_fits_on_a_screen() -> None:
    assert _long_functions(SRC, MAX_FUNCTION_LINES) == []
