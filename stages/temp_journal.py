"""A journal of the temporary outputs each process creates, so that what a killed box left
behind is swept when it runs again.

A job's temporary outputs are removed by the job itself, by the pool that kills it, by
its next attempt and by its DAG's manifest. None of those comes when the whole box was
killed (``kill -9``, a power cut) while a DAG that then got cancelled was writing: no
later attempt, no manifest, no parent process alive to sweep. So every process appends
the path of each temporary output it creates to its own journal file,
``<MEDIAPIPE_HOME>/temps/<host>-<pid>-<start time>.journal``, before creating it; and the
first temporary output a process creates sweeps the journals of this host's processes
that are gone (their pid is not running, or runs another program started at another
time): every path still there is removed, then the journal. A path that was renamed
into place or removed since is simply not there. One journal line costs an append of
~100 bytes per temporary output; a journal is compacted (rewritten with only the paths
still present) every ``COMPACT_EVERY`` lines.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
from pathlib import Path

import psutil

from pipeline.server import default_home

COMPACT_EVERY = 1000
SUFFIX = ".journal"

_lock = threading.Lock()
_state: dict[str, object] = {}  # "pid" -> owner pid, "path" -> journal, "lines" -> count


def _host() -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in socket.gethostname())[:64]


def _started(pid: int) -> int | None:
    try:
        return int(psutil.Process(pid).create_time() * 100)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def folder() -> Path:
    return default_home() / "temps"


def _mine() -> Path:
    """This process's journal; a forked child gets its own (and sweeps the gone ones once)."""
    pid = os.getpid()
    if _state.get("pid") != pid:
        where = folder()
        where.mkdir(parents=True, exist_ok=True)
        _state.update(pid=pid, path=where / f"{_host()}-{pid}-{_started(pid)}{SUFFIX}", lines=0)
        sweep_gone()
    path = _state["path"]
    assert isinstance(path, Path)
    return path


def note(path: str | os.PathLike[str]) -> None:
    """Record a temporary output about to be created at ``path``."""
    with _lock:
        journal = _mine()
        with open(journal, "a", encoding="utf-8") as f:
            f.write(os.fspath(path) + "\n")
        lines = int(str(_state["lines"])) + 1
        if lines >= COMPACT_EVERY:
            _compact(journal)
            lines = 0
        _state["lines"] = lines


def _compact(journal: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        live = [p for p in journal.read_text(encoding="utf-8").splitlines() if os.path.lexists(p)]
        tmp = journal.with_name(journal.name + ".new")
        tmp.write_text("".join(p + "\n" for p in live), encoding="utf-8")
        os.replace(tmp, journal)


def _gone(name: str) -> bool:
    """Whether the journal ``name`` belongs to a process of this host that is no longer
    running (a journal being swept, ``<name>.sweeping-<pid>``, to a sweeper that died)."""
    base, _, sweeper = name.partition(".sweeping-")
    if sweeper:
        return sweeper.isdigit() and _started(int(sweeper)) is None
    parts = base.removesuffix(SUFFIX).rsplit("-", 2)
    if len(parts) != 3 or parts[0] != _host() or not parts[1].isdigit():
        return False
    started = _started(int(parts[1]))
    return started is None or str(started) != parts[2]


def remove(path: str | os.PathLike[str]) -> None:
    """Remove a temporary file or folder if it is there."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def sweep_gone() -> list[str]:
    """Remove the temporary outputs that processes of this host which are gone left, and
    their journals. Returns the paths removed."""
    removed: list[str] = []
    where = folder()
    with contextlib.suppress(FileNotFoundError), os.scandir(where) as entries:
        names = [e.name for e in entries if SUFFIX in e.name and not e.name.endswith(".new")]
    for name in names:
        if not _gone(name):
            continue
        claimed = where / f"{name.partition('.sweeping-')[0]}.sweeping-{os.getpid()}"
        try:
            os.rename(where / name, claimed)  # one sweeper per journal
        except FileNotFoundError:
            continue
        for line in claimed.read_text(encoding="utf-8", errors="replace").splitlines():
            if line and os.path.lexists(line):
                remove(line)
                removed.append(line)
        claimed.unlink(missing_ok=True)
    return removed
