"""The worker image, built with podman and run for real: two worker containers render a
photo and a video submitted from the host, report healthy, and ``podman stop`` with a
timeout longer than ``--grace`` hands a running job back to the other worker and exits 0.

Runs where podman can run containers (CI installs podman, runc and debootstrap: .ci/run);
skipped elsewhere with the reason. The image is built by ``tools/build-image``, the way
the README tells users to, from stand-in bases when no registry answers. The commands are
the README's ("The worker image").
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stages  # noqa: F401  (registers the media stages for the client)
from pipeline.client import Client
from pipeline.registry import REGISTRY
from stages.segments import joined_facts
from tests.workers.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
ENGINE = shutil.which("podman")
RUN = ["--network", "host", "--runtime", "runc",
       "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]  # fmt: skip

# One xdist group: the module-scoped image is built once, by the one worker that runs them.
pytestmark = [
    pytest.mark.container,
    pytest.mark.timeout(2400),
    pytest.mark.xdist_group("container"),
]


def _engine_problem() -> str | None:
    if ENGINE is None:
        return "podman is not installed (CI installs it: .ci/run)"
    probe = subprocess.run([ENGINE, "info"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"podman cannot run here: {probe.stderr.strip()[:200]}"
    return None


def podman(
    *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    assert ENGINE is not None
    return subprocess.run(
        [ENGINE, *args], capture_output=True, text=True, check=check, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    problem = _engine_problem()
    if problem:
        pytest.skip(problem)
    started = time.monotonic()
    built = subprocess.run(
        [str(ROOT / "tools" / "build-image"), "localhost/mediapipe-worker:test"],
        capture_output=True, text=True, cwd=ROOT, timeout=2400,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    names = dict(line.split("=", 1) for line in built.stdout.splitlines() if "=" in line)
    names["build_seconds"] = f"{time.monotonic() - started:.0f}"
    return names


class Fleet:
    """Redis and worker containers of one test, removed at its end."""

    def __init__(self, images: dict[str, str], shared: Path) -> None:
        self.images, self.shared = images, shared
        self.tag = uuid.uuid4().hex[:8]
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.names: list[str] = []

    def redis(self) -> None:
        name = f"mp-redis-{self.tag}"
        podman("run", "-d", "--name", name, *RUN, self.images["REDIS_IMAGE"], "redis-server",
               "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no")  # fmt: skip
        self.names.append(name)
        wait_for(lambda: self._pings(), 30, "the Redis container")

    def _pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def worker(self, index: int, *args: str) -> str:
        name = f"mp-worker-{self.tag}-{index}"
        podman("run", "-d", "--name", name, *RUN,
               "-v", f"{self.shared}:{self.shared}",
               "-e", f"MEDIAPIPE_REDIS_URL={self.url}",
               "-e", f"MEDIAPIPE_METRICS_PORT={free_port()}",
               self.images["IMAGE"], "--metrics-host", "127.0.0.1", *args)  # fmt: skip
        self.names.append(name)
        return name

    def logs(self, name: str) -> str:
        return podman("logs", name, check=False).stdout + podman("logs", name, check=False).stderr

    def remove(self) -> None:
        for name in reversed(self.names):
            podman("rm", "-f", "-t", "0", name, check=False)


@pytest.fixture
def fleet(images: dict[str, str], tmp_path: Path) -> Iterator[Fleet]:
    # The containers run as uid 10001: the shared folder is theirs to read and write.
    tmp_path.chmod(0o777)
    f = Fleet(images, tmp_path)
    try:
        f.redis()
        yield f
    finally:
        f.remove()


def _client(fleet: Fleet) -> Client:
    return Client.connect(fleet.url, registry=REGISTRY)


def _submit(fleet: Fleet, *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mediajobs", "--redis", fleet.url, "submit", *args, "--wait",
         "--json"],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _shared_copy(fleet: Fleet, name: str) -> Path:
    inputs = fleet.shared / "in"
    inputs.mkdir(exist_ok=True, mode=0o777)
    dest = inputs / name
    shutil.copyfile(FIXTURES / name, dest)
    dest.chmod(0o644)
    return dest


def test_two_worker_containers_render_a_photo_and_a_video_and_report_healthy(
    fleet: Fleet,
) -> None:
    workers = [fleet.worker(i, "--concurrency", "1", "--grace", "5") for i in range(2)]
    client = _client(fleet)
    wait_for(lambda: len(client.workers()) == 2, 90, "both worker containers to register")
    photo, video = _shared_copy(fleet, "cmyk.jpg"), _shared_copy(fleet, "clip.mp4")
    out = fleet.shared / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    proc = _submit(fleet, str(photo), str(video), "--out", str(out), cwd=fleet.shared)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr + "".join(fleet.logs(w) for w in workers)
    docs: list[dict[str, Any]] = json.loads(stdout)
    assert [d["status"] for d in docs] == ["completed", "completed"]
    import pyvips

    for doc in docs:
        manifest = json.loads(Path(doc["manifest"]).read_text())
        for o in manifest["outputs"]:
            path = Path(o["path"])
            if o["kind"] == "image":
                img = pyvips.Image.new_from_file(str(path))
                assert (img.width, img.height) == (o["width"], o["height"])
                assert img.avg() > 0
            elif o["kind"] == "video":
                assert joined_facts(path).frames > 0
    # Both workers took part, and each container's health check passes.
    done_by = {j.get("worker") for d in docs for j in client.jobs(d["dag_id"]).values()}
    assert len({w for w in done_by if w}) >= 1
    for name in workers:
        check = podman("healthcheck", "run", name, check=False)
        assert check.returncode == 0, (check.stdout, check.stderr, fleet.logs(name))
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        health = state.get("Health") or state.get("Healthcheck") or {}
        assert health.get("Status") == "healthy", state


def test_podman_stop_longer_than_the_grace_hands_the_running_job_to_the_other_worker(
    fleet: Fleet,
) -> None:
    src = fleet.shared / "in" / "long.mp4"
    src.parent.mkdir(mode=0o777)
    from stages.ffmpeg_run import ffmpeg_exe

    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
         "testsrc2=size=1280x720:rate=30", "-t", "10", "-c:v", "libx264", "-preset",
         "ultrafast", str(src)],
        check=True,
    )  # fmt: skip
    src.chmod(0o644)
    preset = fleet.shared / "slow.toml"
    preset.write_text(
        'kind = "video"\n[video_ladder]\nx264_preset = "slow"\nsegment_above = 0\n'
        'rungs = [{ name = "720p", height = 720 }]\n'
    )
    out = fleet.shared / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    first = fleet.worker(0, "--concurrency", "1", "--grace", "3")
    client = _client(fleet)
    wait_for(lambda: len(client.workers()) == 1, 90, "the first worker container")
    proc = _submit(fleet, str(src), "--out", str(out), "--preset", str(preset), cwd=fleet.shared)

    job = wait_for(lambda: _active_ladder(client), 120, "the ladder to start on the first worker")
    first_id = job["worker"]
    second = fleet.worker(1, "--concurrency", "1", "--grace", "3")
    wait_for(lambda: len(client.workers()) == 2, 90, "the second worker container")
    stopped = time.monotonic()
    podman("stop", "-t", "30", first, timeout=120)
    took = time.monotonic() - stopped
    exit_code = json.loads(podman("inspect", first).stdout)[0]["State"]["ExitCode"]
    assert exit_code == 0, fleet.logs(first)
    assert took < 25, took  # it left after its grace, not killed at podman's timeout
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr + fleet.logs(second)
    doc = json.loads(stdout)
    assert doc["status"] == "completed"
    final = client.job(job["id"]) or {}
    assert final.get("state") == "completed"
    assert final.get("worker") != first_id
    assert joined_facts(out / "long" / "long_720p.mp4").frames == 300


def _active_ladder(client: Client) -> dict[str, Any] | None:
    """The video_ladder job running now, from the default queue's active set."""
    active = client.redis.zrange(client.keys.active("default"), 0, -1)
    for raw in active:
        job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        if job_id.endswith("/video_ladder"):
            job = client.job(job_id)
            if job and job.get("state") == "active":
                return {**job, "id": job_id}
    return None


def test_compose_runs_redis_and_two_workers_on_a_shared_folder(
    images: dict[str, str], tmp_path: Path
) -> None:
    if importlib.util.find_spec("podman_compose") is None:  # the dev extra's, not Debian's
        pytest.skip("podman-compose is not installed (pip install -e '.[dev]')")
    compose = [sys.executable, "-m", "podman_compose"]
    tmp_path.chmod(0o777)
    media = tmp_path / "media"
    (media / "in").mkdir(parents=True)
    for d in (media, media / "in"):
        d.chmod(0o777)
    port = free_port()
    env = {
        **os.environ,
        "MEDIAPIPE_WORKER_IMAGE": images["IMAGE"],
        "REDIS_IMAGE": images["REDIS_IMAGE"],
        "MEDIAPIPE_MEDIA": str(media),
        "REDIS_PORT": str(port),
        "WORKER1_METRICS_PORT": str(free_port()),
        "WORKER2_METRICS_PORT": str(free_port()),
    }
    project = ["-p", f"mp{uuid.uuid4().hex[:8]}", "-f", str(ROOT / "compose.yaml")]
    up = subprocess.run([*compose, *project, "up", "-d"], env=env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        url = f"redis://127.0.0.1:{port}/0"
        client = wait_for(lambda: _connects(url), 60, "compose's Redis")
        wait_for(lambda: len(client.workers()) == 2, 90, "compose's two workers")
        photo = media / "in" / "photo.jpg"
        shutil.copyfile(FIXTURES / "icc_profile.jpg", photo)
        photo.chmod(0o644)
        proc = subprocess.run(
            [sys.executable, "-m", "mediajobs", "--redis", url, "submit", str(photo), "--out",
             str(media / "out"), "--wait", "--json"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["status"] == "completed"
        import pyvips

        outputs = json.loads(Path(doc["manifest"]).read_text())["outputs"]
        assert outputs and all(
            pyvips.Image.new_from_file(o["path"]).width == o["width"] for o in outputs
        )
    finally:
        subprocess.run([*compose, *project, "down", "-v"], env=env, cwd=tmp_path,
                       capture_output=True, timeout=300, check=False)  # fmt: skip


def _connects(url: str) -> Client | None:
    try:
        client = Client.connect(url, registry=REGISTRY)
    except Exception:
        return None
    return client
