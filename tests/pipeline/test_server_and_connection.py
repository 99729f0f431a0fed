"""The embedded server and the connection URL forms, against real server processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.connection import connect, redacted
from pipeline.errors import RedisUnavailableError
from pipeline.server import EmbeddedServer, server_binary


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    EmbeddedServer(tmp_path).stop()


def test_embedded_server_starts_with_aof_on_a_private_socket_and_is_reused(home: Path) -> None:
    server = EmbeddedServer(home)
    assert server.ensure_running() is True
    assert server.ensure_running() is False  # reused while it lives
    c = server.client()
    cfg = c.config_get("*")
    assert cfg["appendonly"] == "yes" and cfg["appendfsync"] == "everysec"
    assert cfg["port"] == "0" and cfg["unixsocket"] == str(server.socket_path)
    assert cfg["maxmemory-policy"] == "noeviction"
    assert oct(server.socket_path.stat().st_mode & 0o777) == "0o700"
    assert cfg["dir"] == str(server.data_dir)


def test_two_commands_started_at_once_start_one_server(home: Path) -> None:
    def start() -> bool:
        return EmbeddedServer(home).ensure_running()

    with ThreadPoolExecutor(4) as pool:
        started = list(pool.map(lambda _: start(), range(4)))
    assert started.count(True) == 1
    pid = int((home / "redis" / "redis.pid").read_text())
    assert _server_pids(home) == [pid]

    # from separate processes too
    code = (
        "import sys; from pathlib import Path; from pipeline.server import EmbeddedServer;"
        "print(EmbeddedServer(Path(sys.argv[1])).ensure_running())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=30)[0].strip() for p in procs]
    assert outs == ["False"] * 3
    assert _server_pids(home) == [pid]


def _server_pids(home: Path) -> list[int]:
    import psutil

    # The server rewrites its process title, but it runs with --dir as its cwd.
    out = []
    for p in psutil.process_iter(["name", "cwd"]):
        if "server" in (p.info["name"] or "") and p.info["cwd"] == str(home / "redis"):
            out.append(p.pid)
    return out


def test_data_survives_a_clean_stop_and_restart(home: Path) -> None:
    server = EmbeddedServer(home)
    server.ensure_running()
    server.client().set("{mp}:kept", "yes")
    assert server.stop() is True
    assert not server.is_running()
    assert server.stop() is False
    server.ensure_running()
    assert server.client().get("{mp}:kept") == b"yes"


def test_long_home_paths_get_a_short_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedServer(deep)
    assert len(str(server.socket_path)) <= 100
    try:
        server.ensure_running()
        assert server.client().ping()
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


def test_redis_url_with_username_and_password(tmp_path: Path) -> None:
    port = _free_port()
    proc = _start(
        [
            server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp_path),
            "--user",
            "default",
            "off",
            "--user",
            "mp",
            "on",
            ">s3cret",
            "~*",
            "&*",
            "+@all",
        ],
        port,
    )
    try:
        c = connect(f"redis://mp:s3cret@127.0.0.1:{port}/0")
        assert c.acl_whoami() == "mp"
        with pytest.raises(RedisUnavailableError) as info:
            connect(f"redis://mp:wrong@127.0.0.1:{port}/0")
        assert "s3cret" not in str(info.value) and "wrong" not in str(info.value)
    finally:
        proc.terminate()
        proc.wait(10)


def test_unreachable_redis_is_a_clear_error() -> None:
    port = _free_port()
    with pytest.raises(
        RedisUnavailableError, match=f"Redis unreachable at redis://127.0.0.1:{port}"
    ):
        connect(f"redis://127.0.0.1:{port}", socket_connect_timeout=1)


def test_password_is_redacted_in_messages() -> None:
    assert redacted("rediss://mp:pw@host:6380/1") == "rediss://mp:***@host:6380/1"
    assert redacted("unix:///tmp/r.sock") == "unix:///tmp/r.sock"


def _tls_redis() -> str | None:
    exe = shutil.which("redis-server")
    if not exe or not shutil.which("openssl"):
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    return exe if "v=" in out else None


@pytest.mark.skipif(_tls_redis() is None, reason="needs Debian's redis-server (TLS) and openssl")
def test_rediss_url_connects_over_tls(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    port = _free_port()
    exe = _tls_redis()
    assert exe
    proc = _start(
        [
            exe,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        port,
    )
    try:
        c = connect(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}&ssl_check_hostname=false")
        assert c.ping()
        assert c.info("server")["redis_version"]
        # The engine's transitions work there too (Redis 7 functions).
        from pipeline.rawlane import RawLane
        from pipeline.scripts import Scripts

        scripts = Scripts(c)
        scripts.run("pause_queue", "{tls}:", "q")
        assert c.hget("{tls}:q:q:meta", "paused") == b"1"
        assert isinstance(scripts._state().lane, RawLane)  # sent and read over TLS"
    finally:
        proc.terminate()
        proc.wait(10)


def test_server_binary_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAPIPE_REDIS_SERVER", "/opt/custom/valkey-server")
    assert server_binary() == "/opt/custom/valkey-server"
    monkeypatch.delenv("MEDIAPIPE_REDIS_SERVER")
    assert os.path.exists(server_binary())
