"""The real kubectl against a fake cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path


def kubectl(kubeconfig: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``kubectl --kubeconfig KUBECONFIG ARGS`` with ``home`` as its HOME (its discovery
    cache) and nothing from the environment; the finished process, whatever its exit status
    (60 s at most)."""
    home.mkdir(exist_ok=True)
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "KUBECONFIG": ""}
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
