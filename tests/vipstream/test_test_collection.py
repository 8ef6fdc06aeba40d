"""The suite itself: a plain `pytest` run collects every test file under tests/ (a folder pytest
skips by default, such as one named `build`, would otherwise drop its tests without a word)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_a_plain_pytest_run_collects_every_test_file():
    on_disk = {str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "tests").rglob("test_*.py")}
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "tests"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    collected = {line.split("::")[0] for line in result.stdout.splitlines() if "::" in line}
    assert sorted(on_disk - collected) == []
