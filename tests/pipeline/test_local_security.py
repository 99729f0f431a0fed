"""The embedded server keeps to its user: private directories and files, and no socket
trusted that someone else could have put in its place. Run through the real command and
real servers; "someone else" is a file chowned to another uid (the suite runs as root)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.server import EmbeddedServer, server_binary
from tests.helpers import wait_until_serving

ROOT = Path(__file__).resolve().parents[2]
NEIGHBOUR = 4321  # a uid that is not ours

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="planting another uid's files needs root")


def _env(home: Path, tmpdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDIAPIPE_REDIS_URL"}
    env.update(MEDIAPIPE_HOME=str(home), TMPDIR=str(tmpdir), PYTHONPATH=str(ROOT))
    return env


def _mediapipe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mediajobs", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        umask=0o022,  # a usual umask: the server must not depend on the caller's
    )


@pytest.fixture
def shared_tmp(tmp_path: Path) -> Path:
    """A directory like /tmp: everyone may create entries in it."""
    d = tmp_path / "tmp"
    d.mkdir()
    os.chmod(d, 0o1777)
    return d


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.kill()
        p.wait(10)


def _long_home(tmp_path: Path) -> Path:
    # Deep enough that redis.sock under it would pass the AF_UNIX path limit.
    return tmp_path / ("h" * 120)


def _socket_of(env: dict[str, str]) -> Path:
    out = _mediapipe(env, "server", "url")
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip().removeprefix("unix://"))


def _foreign_server(sock: Path, data: Path, servers: list[subprocess.Popen[bytes]]) -> redis.Redis:
    """A neighbour's server listening at ``sock``, holding the neighbour's data."""
    data.mkdir()
    servers.append(
        subprocess.Popen(
            [
                *(server_binary(), "--port", "0", "--unixsocket", str(sock)),
                *("--unixsocketperm", "777", "--dir", str(data), "--save", ""),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    theirs = redis.Redis(unix_socket_path=str(sock))
    wait_until_serving(theirs, "the neighbour's server")
    theirs.set("mp:their-secret", "x")
    return theirs


def _connections(r: redis.Redis) -> int:
    return int(r.info("stats")["total_connections_received"])


@pytest.mark.parametrize("theirs_too", ["socket", "socket and directory"])
def test_a_server_someone_else_runs_at_the_fallback_socket_is_refused_not_used(
    tmp_path: Path, shared_tmp: Path, servers: list[subprocess.Popen[bytes]], theirs_too: str
) -> None:
    env = _env(_long_home(tmp_path), shared_tmp)
    sock = _socket_of(env)
    assert shared_tmp in sock.parents  # the long home pushed it into the temp dir
    sock.parent.mkdir(exist_ok=True)
    theirs = _foreign_server(sock, tmp_path / "their-data", servers)
    os.chown(sock, NEIGHBOUR, NEIGHBOUR)
    if theirs_too == "socket and directory" and sock.parent != shared_tmp:
        os.chown(sock.parent, NEIGHBOUR, NEIGHBOUR)
    before = _connections(theirs)

    out = _mediapipe(env, "status")

    assert out.returncode == 3, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mediapipe: refusing"), out.stderr
    assert str(NEIGHBOUR) in lines[0]
    assert _connections(theirs) == before, "the command talked to the neighbour's server"


def test_a_socket_directory_someone_else_made_is_refused_and_no_server_starts_there(
    tmp_path: Path, shared_tmp: Path
) -> None:
    home = _long_home(tmp_path)
    env = _env(home, shared_tmp)
    sock = _socket_of(env)

    started = _mediapipe(env, "server", "start")
    assert started.returncode == 0, started.stderr
    try:
        # Our own socket lives in a directory only we can enter.
        st = os.lstat(sock.parent)
        assert sock.parent != shared_tmp
        assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700
    finally:
        assert _mediapipe(env, "server", "stop").returncode == 0

    # A neighbour who owns that directory could swap the socket: refuse, start nothing.
    os.chown(sock.parent, NEIGHBOUR, NEIGHBOUR)
    out = _mediapipe(env, "server", "start")
    assert out.returncode == 3, out.stdout + out.stderr
    assert out.stderr.startswith("mediapipe: ") and str(NEIGHBOUR) in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not sock.exists()


def test_home_data_dir_and_aof_are_private_to_the_user(tmp_path: Path, shared_tmp: Path) -> None:
    home = tmp_path / "home"
    env = _env(home, shared_tmp)
    # Left by an older version: a world-readable data dir and log.
    (home / "redis").mkdir(parents=True)
    os.chmod(home, 0o755)
    os.chmod(home / "redis", 0o755)
    (home / "redis" / "redis.log").write_text("old lines\n")
    os.chmod(home / "redis" / "redis.log", 0o644)

    out = _mediapipe(env, "server", "start")
    assert out.returncode == 0, out.stderr
    server = EmbeddedServer(home)
    try:
        c = server.client()
        c.set("mp:job:1", '{"params": "private"}')
        c.bgrewriteaof()  # an RDB-format base file too
        deadline = time.monotonic() + 15
        while c.info("persistence")["aof_rewrite_in_progress"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        c.set("mp:job:2", "more")
        time.sleep(1.2)  # appendfsync everysec
    finally:
        server.stop()

    modes = {}
    for path in [home, *home.rglob("*")]:
        st = os.lstat(path)
        modes[str(path.relative_to(tmp_path))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode))
    aof = [p for p in modes if "appendonlydir" in p and p.endswith(".aof")]
    assert aof, modes
    for name, (kind, mode) in modes.items():
        if kind == stat.S_IFDIR:
            assert mode == 0o700, (name, oct(mode))
        elif kind == stat.S_IFREG:
            assert mode == 0o600, (name, oct(mode))
