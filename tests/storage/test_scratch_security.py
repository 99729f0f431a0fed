"""Scratch folders for outputs bound for storage stay private to the user, whatever
another user planted in the shared temp dir beforehand (a symlink, a folder of theirs).
The suite runs as root: "another user" owns files chowned to another uid."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest

from stages.storage import scratch_dir, scratch_prefix, stores_outputs

NEIGHBOUR = 4321  # a uid that is not ours
JOB = "dag1:render"


@pytest.fixture
def shared_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The process's temp dir is a fresh one like /tmp: everyone may create entries in it."""
    d = tmp_path / "tmp"
    d.mkdir()
    os.chmod(d, 0o1777)
    monkeypatch.delenv("MEDIAPIPE_SCRATCH", raising=False)
    monkeypatch.setenv("TMPDIR", str(d))
    monkeypatch.setattr(tempfile, "tempdir", None)  # forget the cached one: read TMPDIR
    return d


class Job:
    id = JOB


class Ctx:
    job = Job()


def _render(tmp_path: Path) -> tuple[dict[str, Any], list[os.stat_result]]:
    """Run a stage with a storage target; return its result and what its scratch was."""
    seen: list[os.stat_result] = []

    @stores_outputs
    def stage(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        out = Path(params["out_dir"])
        seen.append(os.lstat(out.parent))
        out.mkdir(parents=True)
        (out / "a.webp").write_bytes(b"rendition")
        return {"renditions": [{"path": str(out / "a.webp")}], "scratch": str(out.parent)}

    params = {"storage": str(tmp_path / "published"), "name": "photo"}
    return stage(Ctx(), params, {}), seen


def _precious(tmp_path: Path) -> Path:
    """Someone's file elsewhere, where a followed symlink would lead."""
    target = tmp_path / "elsewhere" / JOB.replace("/", "_")
    target.mkdir(parents=True)
    (target / "precious.txt").write_text("keep me")
    return target / "precious.txt"


def _assert_private_and_published(
    tmp_path: Path, result: dict[str, Any], seen: list[os.stat_result]
) -> None:
    (st,) = seen
    assert st.st_uid == os.geteuid() and stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
    assert (tmp_path / "published" / "photo" / "a.webp").read_bytes() == b"rendition"
    assert result["renditions"][0]["path"] == str(tmp_path / "published" / "photo" / "a.webp")
    assert not Path(result["scratch"]).exists(), "scratch not removed"


def test_a_symlink_planted_at_the_old_scratch_path_is_not_followed(
    tmp_path: Path, shared_tmp: Path
) -> None:
    precious = _precious(tmp_path)
    (shared_tmp / f"mediapipe-scratch-{os.geteuid()}").symlink_to(precious.parent.parent)

    result, seen = _render(tmp_path)

    assert precious.read_text() == "keep me"
    assert not Path(result["scratch"]).resolve().is_relative_to(precious.parent.parent)
    _assert_private_and_published(tmp_path, result, seen)


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another uid's folder needs root")
def test_a_folder_another_user_made_for_our_scratch_is_not_used(
    tmp_path: Path, shared_tmp: Path
) -> None:
    theirs = shared_tmp / f"mediapipe-scratch-{os.geteuid()}"
    theirs.mkdir(mode=0o777)
    os.chmod(theirs, 0o777)
    os.chown(theirs, NEIGHBOUR, NEIGHBOUR)

    result, seen = _render(tmp_path)

    assert not list(theirs.iterdir()), "renditions were written where the neighbour can read"
    _assert_private_and_published(tmp_path, result, seen)


def test_leftovers_of_a_killed_attempt_are_removed_but_planted_links_are_not_followed(
    tmp_path: Path, shared_tmp: Path
) -> None:
    prefix = scratch_prefix(JOB)
    ours = Path(tempfile.mkdtemp(prefix=prefix, dir=shared_tmp))
    (ours / "half.webp").write_bytes(b"partial")
    precious = _precious(tmp_path)
    (shared_tmp / f"{prefix}planted1").symlink_to(precious.parent)  # matches like a leftover

    result, seen = _render(tmp_path)

    assert not ours.exists()
    assert precious.read_text() == "keep me"
    _assert_private_and_published(tmp_path, result, seen)


def test_a_job_scratch_never_sweeps_another_jobs_live_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a killed attempt of the same job is swept: not a job whose name starts with
    this one's, nor one whose name differs only where it is rewritten or cut."""
    monkeypatch.setenv("MEDIAPIPE_SCRATCH", str(tmp_path / "scratch"))
    for other, mine in [
        ("d1/render-hd", "d1/render"),
        ("a_b/c", "a/b_c"),
        ("d1/" + "n" * 120 + "-one", "d1/" + "n" * 120 + "-two"),
    ]:
        live = scratch_dir(other)
        (live / "rendition.mp4").write_bytes(b"still uploading")
        scratch_dir(mine)
        assert (live / "rendition.mp4").read_bytes() == b"still uploading", (other, mine)
    again = scratch_dir("d1/render")  # the same job's next attempt sweeps its own
    assert len(list((tmp_path / "scratch").glob("*render-*"))) == 2  # d1/render-hd's, this
    assert again.is_dir()
