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
