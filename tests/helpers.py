"""Helpers shared by the tests (``from tests.helpers import ...``)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def with_repo_on_pythonpath(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this checkout first on ``PYTHONPATH``: its raydet, and its ``tests`` package, for processes
    started in any working directory."""
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)}


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` and capture its output; this checkout's raydet comes first on the path."""
    full_env = with_repo_on_pythonpath({**os.environ, **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def own_lines(output: str) -> list[str]:
    """The non-blank lines a command printed itself: Ray's lines streamed from its processes (``(… pid=…)``)
    and progress-bar redraws (``\\r``, ANSI escapes) are dropped; they may arrive after the command's last line."""
    lines = (ANSI_ESCAPE.sub("", line).strip() for line in re.split(r"[\r\n]+", output))
    return [line for line in lines if line and "pid=" not in line]
