"""The dependency rules of DESIGN.md section 3, checked on the source: model/ imports no other
project package, pipeline/ never imports train/ or model/, the shard schema imports nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = {"pipeline", "model", "train", "tools", "vipstream"}
FORBIDDEN = {
    "model": PROJECT_PACKAGES - {"model"},
    "pipeline": {"train", "model"},
}


def _project_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & PROJECT_PACKAGES


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_what_it_must_not_know(package):
    offenders = {str(p.relative_to(REPO_ROOT)): sorted(_project_imports(p) & FORBIDDEN[package])
                 for p in (REPO_ROOT / package).rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_shard_schema_imports_nothing_from_the_project():
    assert _project_imports(REPO_ROOT / "vipstream" / "schema.py") == set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_edges(package: str) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports (anywhere in the file, lazy imports too:
    a function-level import is how a circle usually hides)."""
    modules = {_module_name(p): p for p in (REPO_ROOT / package).rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                            else node.module for alias in node.names}
        edges[name] = {t for t in targets if t in modules and t != name and modules[t].name != "__init__.py"}
    return edges


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_pipeline_modules_import_each_other_without_a_circle():
    assert _find_cycle(_import_edges("pipeline")) is None


def test_cycle_finder_sees_a_circle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
