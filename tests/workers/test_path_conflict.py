"""A file where a folder must go (``[Errno 17] File exists``, ENOTDIR, EISDIR) is
permanent: every retry would meet the same path, so the job is dead after one attempt."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.model import Dag
from pipeline.registry import Registry, stage
from stages.output import atomic_output
from tests.helpers import run_dag
from workers.outcomes import DEAD, RETRY, Failure


@pytest.mark.parametrize(
    ("exc", "action"),
    [
        (FileExistsError(errno.EEXIST, "File exists", "/out/talk"), DEAD),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/out/talk/x.jpg"), DEAD),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/out/talk.mp4"), DEAD),
        (PermissionError(errno.EACCES, "Permission denied", "/out"), RETRY),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset"), RETRY),
    ],
)
def test_a_path_in_the_way_is_permanent_and_other_os_errors_are_retried(
    exc: OSError, action: str
) -> None:
    f = Failure.of(exc, "tb")
    assert f.action == action
    if action == DEAD:
        assert f.error_type == "PathConflictError"
        assert f.message.startswith(f"{exc.strerror}: {exc.filename}")
        assert "[Errno" not in f.message


def test_an_output_folder_that_is_a_file_kills_the_job_on_its_first_attempt(
    client: Client, broker: Broker, registry: Registry, tmp_path: Path
) -> None:
    blocker = tmp_path / "talk"
    blocker.write_text("a file where the output folder must go")

    @stage("t.write_output", registry=registry, attempts=3)
    def write_output(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
        # The media stages' own way to write: mkdir(parents, exist_ok) of the folder
        # raises FileExistsError when the folder is a file.
        with atomic_output(Path(params["out"]) / "poster.jpg") as tmp:
            tmp.write_bytes(b"jpeg")
        return "written"

    dag = Dag()
    dag.add("poster", "t.write_output", {"out": str(blocker)})
    client.submit(dag)
    assert run_dag(client, broker, dag.id, timeout=20) == "failed"
    job = client.job(dag.job_id("poster"))
    assert job is not None and job["state"] == "dead"
    assert job["attempts"] == 1, job
    assert job["error"]["type"] == "PathConflictError"
    assert str(blocker) in job["error"]["message"]
