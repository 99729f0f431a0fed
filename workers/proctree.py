"""Stopping a job for real: its process and every process it started (ffmpeg)."""

from __future__ import annotations

import contextlib

import psutil


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def kill_tree(pid: int, *, include_root: bool = True, timeout: float = 5.0) -> list[int]:
    """SIGKILL ``pid``'s descendants (and ``pid``) and wait for them; returns the pids killed.

    Descendants are collected before anything is killed: once the root dies, its children
    are re-parented and could no longer be found through it.
    """
    procs = descendants(pid)
    if include_root:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=timeout)
    return [p.pid for p in procs]
