"""The journal of temporary outputs (stages/temp_journal.py): a gone process's leftovers
are swept, a running process's never are, and a journal stays small."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stages import temp_journal
from tests.cli.conftest import ROOT

SWEEP = "from stages import temp_journal; print(len(temp_journal.sweep_gone()))"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDIAPIPE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(temp_journal, "_state", {})
    return tmp_path


def _sweep_elsewhere() -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", SWEEP], env=env, capture_output=True, text=True, check=True
    )
    return int(res.stdout)


def test_a_running_process_keeps_its_temporary_outputs(home: Path) -> None:
    tmp = home / ".x.part"
    temp_journal.note(tmp)
    tmp.write_bytes(b"half")
    assert _sweep_elsewhere() == 0
    assert tmp.exists()


def test_a_gone_process_leaves_nothing(home: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    gone = temp_journal.folder()
    gone.mkdir(parents=True, exist_ok=True)
    left = home / ".y.part"
    left.write_bytes(b"half")
    renamed_since = home / ".z.part"
    journal = gone / f"{temp_journal._host()}-{proc.pid}-12345{temp_journal.SUFFIX}"
    journal.write_text(f"{left}\n{renamed_since}\n")
    assert _sweep_elsewhere() == 1
    assert not left.exists() and not journal.exists()


def test_a_journal_is_compacted(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(temp_journal, "COMPACT_EVERY", 10)
    kept = home / ".kept.part"
    kept.write_bytes(b"")
    temp_journal.note(kept)
    for i in range(25):
        temp_journal.note(home / f".gone{i}.part")  # never created, or renamed since
    lines = temp_journal._mine().read_text().splitlines()
    assert str(kept) in lines and len(lines) <= 10
