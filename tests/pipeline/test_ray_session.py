"""pipeline/ray_session.py: a local Ray keeps Ray's token authentication on, and the job says so
once in its own words instead of Ray's warning on every start."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from pipeline.ray_session import AUTH_NOTE
from tests.conftest import REPO_ROOT

RAY_WARNING = "Token authentication is enabled for this Ray cluster"


def test_a_local_ray_keeps_token_auth_and_says_so_once_in_our_words():
    code = textwrap.dedent("""
        import logging, os
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        from pipeline.ray_session import _say_auth_mode_once, ray_session
        with ray_session(num_cpus=1):
            print("auth mode:", os.environ.get("RAY_AUTH_MODE"), flush=True)
        _say_auth_mode_once()  # a second start in the same process says nothing more
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "auth mode: token" in result.stdout  # Ray's secure default is untouched
    assert RAY_WARNING not in result.stderr
    assert result.stderr.count(AUTH_NOTE) == 1
