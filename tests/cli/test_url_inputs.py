"""Inputs named by URL, fetched by a worker that lives in a network namespace the test
creates: only its loopback interface, carrying a private address (10.77.0.1) and the cloud
metadata address (169.254.169.254) besides 127.0.0.1, an HTTP server on each, nothing
routed anywhere else, so even a bug sends nothing beyond it.

The worker reaches Redis through its unix socket (sockets in the file system cross
network namespaces); the submitter never fetches the URL.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stages.segments import joined_facts
from tests.cli.conftest import FIXTURES, ROOT, Cli

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to build the test's own network namespace",
)

NETNS = """
set -e
ip link set lo up
ip addr add 10.77.0.1/32 dev lo
ip addr add 169.254.169.254/32 dev lo
python -m tests.cli.url_server "$0" 127.0.0.1:8080 10.77.0.1:8080 169.254.169.254:80 &
exec "$@"
"""


def netns_worker(cli: Cli, namespace: str, served: Path, **env: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", NETNS, str(served),
         sys.executable, "-m", "mediajobs", "--namespace", namespace, "worker",
         "--concurrency", "1", "--no-adaptive", "--grace", "5", "--log-level", "INFO"],
        cwd=ROOT, env={**cli.env, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    cli.procs.append(proc)
    return proc


def _submit(cli: Cli, namespace: str, url: str, out: Path) -> subprocess.CompletedProcess[str]:
    return cli.run(
        "--namespace", namespace, "submit", url, "--out", str(out), "--wait", "--json",
        timeout=240,
    )  # fmt: skip


def _said(res: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        x for x in res.stderr.splitlines() if x.startswith("mediapipe:") and "submitted" not in x
    ]


def test_a_url_input_is_fetched_under_the_policy_and_private_addresses_are_refused(
    fleet_cli: Cli, namespace: str, tmp_path: Path
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    shutil.copyfile(FIXTURES / "clip.mp4", served / "clip.mp4")
    out = tmp_path / "out"

    # The operator allows loopback (here: where the test's server is); private stays out.
    allowed = netns_worker(
        fleet_cli,
        namespace,
        served,
        MEDIAPIPE_URL_ALLOW="127.0.0.1",
        MEDIAPIPE_INPUT_CACHE=str(tmp_path / "cache-allowed"),
    )
    res = _submit(fleet_cli, namespace, "http://127.0.0.1:8080/clip.mp4", out)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"] == "completed"
    videos = [Path(o["path"]) for o in doc["outputs"] if o["kind"] == "video"]
    assert videos and all(joined_facts(v).frames > 0 for v in videos)
    manifest = json.loads(Path(doc["manifest"]).read_text())
    assert manifest["input"]["path"] == "http://127.0.0.1:8080/clip.mp4"

    private = "http://10.77.0.1:8080/clip.mp4"
    res = _submit(fleet_cli, namespace, private, out)
    assert res.returncode == 2, res.stderr
    (line,) = _said(res)
    assert line.startswith(f"mediapipe: {private} refused: 10.77.0.1 is private")
    assert "MEDIAPIPE_URL_ALLOW" in line

    hop = f"http://127.0.0.1:8080/to/{private}"  # an allowed host redirecting to a private one
    res = _submit(fleet_cli, namespace, hop, out)
    assert res.returncode == 2, res.stderr
    (line,) = _said(res)
    assert "10.77.0.1 is private" in line

    metadata = "http://169.254.169.254/latest/meta-data/"
    res = _submit(fleet_cli, namespace, metadata, out)
    assert res.returncode == 2, res.stderr
    assert "169.254.169.254 is link-local" in _said(res)[0]

    res = _submit(fleet_cli, namespace, "http://127.0.0.1:8080/loop", out)
    assert res.returncode == 2 and "more than 5 redirects" in _said(res)[0], res.stderr

    # By default loopback is refused too.
    allowed.kill()
    allowed.wait(10)
    netns_worker(fleet_cli, namespace, served, MEDIAPIPE_INPUT_CACHE=str(tmp_path / "cache"))
    res = _submit(fleet_cli, namespace, "http://127.0.0.1:8080/clip.mp4", tmp_path / "again")
    assert res.returncode == 2, res.stderr
    (line,) = _said(res)
    assert "127.0.0.1 is loopback" in line


def test_a_url_with_credentials_is_refused_before_anything_is_queued(fleet_cli: Cli) -> None:
    res = fleet_cli.run("submit", "https://user:secret@example.com/a.mp4", "--out", "o")
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "mediapipe: https://user:***@example.com/a.mp4: a URL with credentials: they would be"
        " sent to whoever serves it; not fetched"
    ], res.stderr
