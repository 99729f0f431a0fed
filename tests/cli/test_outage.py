"""Commands that follow DAGs ride out a Redis outage, and give up cleanly after a while.

Each test owns its server (an EmbeddedServer in a temp dir, AOF on) so it can kill it and
restart it on its AOF without touching the suite's server.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from pipeline.client import Client
from pipeline.model import Dag
from pipeline.registry import REGISTRY
from pipeline.server import EmbeddedServer
from tests.cli.conftest import FIXTURES, ROOT, Cli
from tests.workers.conftest import wait_for

DAG_ID = re.compile(r"\b[0-9a-f]{16}\b")


@dataclass
class Own:
    server: EmbeddedServer
    cli: Cli
    tmp: Path

    def client(self) -> Client:
        return Client(self.server.client(), registry=REGISTRY)

    def kill9_and_restart(self, down_for: float = 1.0) -> None:
        """SIGKILL the server (no clean shutdown) and start it again on its AOF."""
        pid = int(self.server.pid_file.read_text().strip())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(pid) or _zombie(pid), 10, "the server to die")
        time.sleep(down_for)
        self.server.ensure_running()

    def start(self, *args: str, env: dict[str, str] | None = None) -> Proc:
        """The command with stdout and stderr in files, readable while it runs."""
        n = len(list(self.tmp.glob("cmd*.out")))
        out, err = self.tmp / f"cmd{n}.out", self.tmp / f"cmd{n}.err"
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mediajobs", *args],
                cwd=self.tmp,
                env={**self.cli.env, **(env or {})},
                stdout=o,
                stderr=e,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return Proc(proc, out, err)


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(
                f"still running after {timeout}s\nstdout: {self.stdout}\nstderr: {self.stderr}"
            ) from None


def _zombie(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Own]:
    server = EmbeddedServer(tmp_path / "srv")
    server.ensure_running()
    env = {k: v for k, v in os.environ.items() if k != "MEDIAPIPE_REDIS_GIVE_UP"}
    env.update(
        MEDIAPIPE_REDIS_URL=server.url,
        PYTHONPATH=str(ROOT),
        MEDIAPIPE_HOME=str(tmp_path / "unused-home"),
    )
    cli = Cli(env, tmp_path)
    yield Own(server, cli, tmp_path)
    cli.stop_workers()
    server.stop()


def test_submit_wait_rides_out_a_server_killed_and_restarted_on_its_aof(
    own: Own, tmp_path: Path
) -> None:
    src = _make_video(tmp_path / "six.mp4", seconds=6)
    own.cli.worker("mp", "--concurrency", "1", "--lease", "5")
    run = own.start(
        "submit",
        str(src),
        str(FIXTURES / "clip.mp4"),
        "--preset",
        str(_slow_preset(tmp_path, "slower")),
        "--out",
        str(tmp_path / "out"),
        "--wait",
        "--json",
    )
    # The ids are on stderr before the command follows them, so a user can re-attach.
    ids = wait_for(lambda: DAG_ID.findall(run.stderr), 30, "the DAG ids on stderr")
    assert len(set(ids)) == 2
    client = own.client()
    ladder = f"{ids[0]}/video_ladder"
    wait_for(lambda: (client.job(ladder) or {}).get("state") == "active", 30, "the ladder")
    time.sleep(1.2)  # the submission reached the AOF (appendfsync everysec)
    assert run.proc.poll() is None, "finished before the server was killed"
    own.kill9_and_restart(down_for=3.0)
    assert run.wait(180) == 0, run.stderr
    docs = json.loads(run.stdout)
    assert [d["status"] for d in docs] == ["completed", "completed"]
    assert [d["dag_id"] for d in docs] == ids
    assert "Traceback" not in run.stderr
    assert run.stderr.count("Redis unreachable") == 1, run.stderr
    assert "Redis is back" in run.stderr


def test_submit_wait_gives_up_after_the_configured_time(own: Own, tmp_path: Path) -> None:
    own.client().pause("default")  # nothing runs: the command is following when Redis goes
    run = own.start(
        "submit",
        str(FIXTURES / "clip.mp4"),
        "--out",
        str(tmp_path / "out"),
        "--wait",
        "--json",
        env={"MEDIAPIPE_REDIS_GIVE_UP": "2"},
    )
    ids = wait_for(lambda: DAG_ID.findall(run.stderr), 30, "the DAG id on stderr")
    time.sleep(0.5)
    own.server.stop()
    stopped = time.monotonic()
    assert run.wait(30) == 3, run.stderr
    took = time.monotonic() - stopped
    assert 1.5 <= took < 10, took
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert "Traceback" not in run.stderr
    notices = [line for line in lines if "Redis unreachable" in line]
    assert len(notices) == 2, run.stderr  # the notice, then the give-up line
    assert "giving up" in lines[-1] and "MEDIAPIPE_REDIS_GIVE_UP" in lines[-1]
    doc = json.loads(run.stdout)  # the JSON names the DAG on any exit
    assert doc["dag_id"] == ids[0]


def test_watch_rides_out_a_restart(own: Own) -> None:
    # A short lease: a completion lost with the AOF's last second is run again soon.
    own.cli.worker(
        "mp", "--concurrency", "1", "--lease", "5", "--import", "tests.workers.sample_stages"
    )
    client = own.client()
    dag = Dag()
    dag.add("nap", "t.sleep", {"seconds": 3.0})
    dag.add("after", "t.echo", {"x": 1}, after=["nap"])
    client.submit(dag)
    watch = own.start("watch", dag.id)
    wait_for(lambda: (client.job(dag.job_id("nap")) or {}).get("state") == "active", 30)
    time.sleep(1.2)
    own.kill9_and_restart(down_for=3.0)
    assert watch.wait(60) == 0, watch.stderr
    assert f"{dag.id}: completed" in watch.stdout
    assert "Traceback" not in watch.stderr
    assert watch.stderr.count("Redis unreachable") == 1, watch.stderr


def test_a_local_run_stopped_by_the_server_going_away_exits_3_and_stops_ffmpeg(
    cli: Cli, tmp_path: Path
) -> None:
    src = _make_video(tmp_path / "long.mp4", seconds=20)
    preset = _slow_preset(tmp_path, "veryslow")
    out = tmp_path / "out"
    env = {**cli.env, "MEDIAPIPE_REDIS_GIVE_UP": "2"}
    with open(tmp_path / "err", "wb") as err:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "mediajobs", "submit", str(src)),
                *("--preset", str(preset), "--out", str(out), "--json"),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        wait_for(lambda: _ffmpegs(out), 60, "ffmpeg to run the ladder")
        time.sleep(1.0)
        EmbeddedServer(Path(env["MEDIAPIPE_HOME"])).stop()
        assert proc.wait(40) == 3
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stderr = (tmp_path / "err").read_text()
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 2, stderr  # the notice, then the give-up line
    assert "Redis unreachable" in lines[0] and "giving up" in lines[1]
    assert _ffmpegs(out) == []
    assert list(out.rglob("*.part*")) == []


def _ffmpegs(out: Path) -> list[int]:
    """Running ffmpeg processes writing under ``out``."""
    found = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        ours = "ffmpeg" in (p.info.get("name") or "") + cmd and str(out) in cmd
        with contextlib.suppress(psutil.NoSuchProcess):
            if ours and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.info["pid"])
    return found


def _make_video(path: Path, *, seconds: int) -> Path:
    """A 640x480 test pattern: quick to make, seconds of work for a slow x264 preset."""
    from stages.ffmpeg_run import ffmpeg_exe

    subprocess.run(
        [
            *(ffmpeg_exe(), "-v", "error", "-f", "lavfi"),
            *("-i", "testsrc2=size=640x480:rate=30", "-t", str(seconds)),
            *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)),
        ],
        check=True,
    )
    return path


def _slow_preset(tmp_path: Path, x264_preset: str) -> Path:
    preset = tmp_path / f"{x264_preset}.toml"
    preset.write_text(
        f'kind = "video"\n[video_ladder]\nx264_preset = "{x264_preset}"\n'
        'rungs = [{ name = "480p", height = 480, crf = 22 }]\n'
    )
    return preset
