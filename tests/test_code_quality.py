"""ruff and mypy are part of the suite, so CI enforces them with the README's one command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("tool", [["ruff", "check", "."], ["ruff", "format", "--check", "."]])
def test_ruff_is_clean(tool: list[str]) -> None:
    if shutil.which("ruff") is None:
        pytest.skip("ruff not installed (pip install -e '.[dev]')")
    out = subprocess.run(tool, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_is_clean() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
