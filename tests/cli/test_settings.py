"""Settings: a flag beats the environment, which beats the config file, which beats the
default; a bad config file is one line naming the file and the key (exit 2); every option
and MEDIAPIPE_* variable is documented in docs/configuration.md; completion works."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import redis

from mediajobs import settings
from mediajobs.cli import main
from pipeline.keys import Keys
from tests.cli.conftest import ROOT, Cli

DOC = ROOT / "docs" / "configuration.md"


@pytest.fixture
def levels(namespace: str, r: redis.Redis) -> Iterator[dict[str, str]]:
    """A namespace per place a setting can come from; each deleted afterwards."""
    names = {level: f"{namespace}{level}" for level in ("flag", "env", "file")}
    yield names
    for ns in names.values():
        keys = list(r.scan_iter(match=Keys(ns).pattern(), count=1000))
        if keys:
            r.delete(*keys)


def _queues(cli: Cli, *args: str, **env: str) -> set[str]:
    before = dict(cli.env)
    cli.env.update(env)
    try:
        res = cli.run(*args, "status", "--json")
    finally:
        cli.env = before
    assert res.returncode == 0, res.stderr
    return {q for q in json.loads(res.stdout)["queues"] if q.startswith("q-")}


def test_a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default(
    fleet_cli: Cli, levels: dict[str, str], tmp_path: Path
) -> None:
    # Each namespace holds one queue named after its level: the queues `status` lists
    # say which namespace the command used.
    for level, ns in levels.items():
        assert fleet_cli.run("--namespace", ns, "pause", f"q-{level}").returncode == 0
    config = tmp_path / "config.toml"
    config.write_text(f'namespace = "{levels["file"]}"\n')
    fleet_cli.env.pop("MEDIAPIPE_NAMESPACE", None)
    fleet_cli.env["XDG_CONFIG_HOME"] = str(tmp_path / "no-config-here")

    with_file = {"MEDIAPIPE_CONFIG": str(config)}
    env_too = {**with_file, "MEDIAPIPE_NAMESPACE": levels["env"]}
    assert _queues(fleet_cli, "--namespace", levels["flag"], **env_too) == {"q-flag"}
    assert _queues(fleet_cli, **env_too) == {"q-env"}
    assert _queues(fleet_cli, **with_file) == {"q-file"}
    assert _queues(fleet_cli) == set()  # the default namespace, mp, has none of them

    # The default location, $XDG_CONFIG_HOME/mediapipe/config.toml, is read too.
    home = tmp_path / "xdg"
    (home / "mediapipe").mkdir(parents=True)
    (home / "mediapipe" / "config.toml").write_text(config.read_text())
    assert _queues(fleet_cli, XDG_CONFIG_HOME=str(home)) == {"q-file"}


def test_config_says_where_each_setting_comes_from(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'namespace = "from-file"\nmax-duration = 60\nredis-give-up = "never"\n'
        '[worker]\nconcurrency = 3\ntags = ["gpu"]\n[dlq.list]\nlimit = 5\n'
    )
    cli.env.update(MEDIAPIPE_CONFIG=str(config), MEDIAPIPE_REDIS_GIVE_UP="7")
    res = cli.run("--log-format", "json", "config")
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line.split() for line in res.stdout.splitlines()[1:]}
    assert res.stdout.startswith(f"config file: {config} (read)")
    assert rows["--namespace"][1:] == ["from-file", "(file)"]
    assert rows["--log-format"][1:] == ["json", "(flag)"]
    assert rows["MEDIAPIPE_MAX_DURATION"][1:] == ["60", "(file)"]
    assert rows["MEDIAPIPE_REDIS_GIVE_UP"][1:] == ["7", "(env)"]  # env beats the file
    assert rows["MEDIAPIPE_BREAKER_FAILURES"][1:] == ["3", "(default)"]
    assert re.search(r"worker --concurrency\s+3\s+\(file\)", res.stdout)
    assert re.search(r"worker --tags\s+\['gpu'\]\s+\(file\)", res.stdout)
    assert re.search(r"dlq list --limit\s+5\s+\(file\)", res.stdout)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("namespce = 'x'\n", "unknown key 'namespce'"),
        ("[worker]\nconcurency = 3\n", "unknown key 'worker.concurency'"),
        ("[worker]\nmin = 'two'\n", "worker.min"),
        ("[worker]\nlog-level = 'loud'\n", "worker.log-level"),
        ("max-image-pixels = 'lots'\n", "max-image-pixels"),
        ("worker = 3\n", "worker must be a table"),
        ("[status\nlimit = 3\n", "not valid TOML"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_file_and_the_key_and_exit_2(
    cli: Cli, tmp_path: Path, text: str, named: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    cli.env["MEDIAPIPE_CONFIG"] = str(config)
    res = cli.run("status")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith(f"mediapipe: {config}: ") and named in res.stderr
    assert res.stdout == ""


def test_a_config_file_named_but_missing_is_one_line_and_exit_2(cli: Cli, tmp_path: Path) -> None:
    res = cli.run("--config", str(tmp_path / "nope.toml"), "status")
    assert res.returncode == 2
    assert res.stderr == f"mediapipe: {tmp_path / 'nope.toml'}: config file not found\n"


def test_shell_completion_completes_commands_and_choices(cli: Cli) -> None:
    cli.env.update(_MEDIAPIPE_COMPLETE="bash_complete", COMP_WORDS="mediapipe wor", COMP_CWORD="1")
    res = cli.run()
    assert res.returncode == 0, res.stderr
    assert {"plain,worker", "plain,workers"} <= set(res.stdout.split())
    cli.env.update(COMP_WORDS="mediapipe worker --log-format ", COMP_CWORD="3")
    assert {"plain,plain", "plain,json"} <= set(cli.run().stdout.split())
    # An input to submit completes as a file name (the shell lists the files).
    cli.env.update(COMP_WORDS="mediapipe submit in/pho", COMP_CWORD="2")
    assert cli.run().stdout.split() == ["file,in/pho"]


def _commands(cmd: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))


def test_every_option_and_variable_is_in_docs_configuration() -> None:
    doc = DOC.read_text()
    missing = []
    option_vars: set[str] = set()  # variables an option reads (documented on its row)
    for path in _commands(main):
        cmd: click.Command = main
        for name in path:
            assert isinstance(cmd, click.Group)
            cmd = cmd.commands[name]
        for param in cmd.params:
            if not isinstance(param, click.Option):
                continue
            if f"`{param.opts[-1]}" not in doc:
                missing.append(f"{' '.join(path) or 'mediapipe'} {param.opts[-1]}")
            if isinstance(param.envvar, str):
                option_vars.add(param.envvar)
                if f"`{param.envvar}`" not in doc:
                    missing.append(param.envvar)
    for setting in settings.ENV_SETTINGS:
        if f"| `{setting.var}` | `{setting.key}` |" not in doc:
            missing.append(f"{setting.var} (key {setting.key})")
    # Every variable the code reads is one of those (a name built from a prefix, as the
    # retention settings are, counts through its settings).
    read = set()
    for package in ("mediajobs", "pipeline", "workers", "stages"):
        for source in (ROOT / package).rglob("*.py"):
            read |= set(re.findall(r"MEDIAPIPE_[A-Z_]*[A-Z]", source.read_text()))
    known = {s.var for s in settings.ENV_SETTINGS} | {settings.ENV_CONFIG} | option_vars
    known |= {"MEDIAPIPE_DASHBOARD_TOKEN", "MEDIAPIPE_DASHBOARD_TOKEN_FILE"}
    unknown = {v for v in read - known if not any(k.startswith(v + "_") for k in known)}
    assert not missing and not unknown, (missing, unknown)
    assert all(f"`{v}`" in doc for v in known)
