"""Output names come from whoever named the input: whatever the name, the output folder
stays under --out, no two inputs share one, and a stage never writes outside its folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stages  # noqa: F401  (registers the media stages)
from mediajobs.planning import _unique_dir
from pipeline.context import JobContext, running
from pipeline.errors import BadInputError
from pipeline.jobs import ClaimedJob
from pipeline.model import Backoff
from stages import output
from stages.probe import probe
from stages.thumbnails import video_poster
from stages.video import video_ladder
from tests.stages.conftest import RecordingContext

ROOT = Path("/srv/out")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

HOSTILE = [
    "..",
    ".",
    "...",
    ".hidden",
    "..hidden",
    "-rf",
    "--help",
    "~",
    "$HOME",
    "a;rm -rf ~",
    "$(touch x)",
    "`id`",
    "a|b&c>d<e",
    "'\"",
    "*?[]",
    "\\..\\..\\x",
    " ",
    "\t\n",
    "Photo",
    "photo",
    "PHOTO",
    "ß",
    "ss",
    "SS",
    "café",
    "cafe\u0301",
    "日本語",
    "\u202etxt.exe",
    "\U0001f3b5",
    "x" * 255,
    "x" * 254 + "y",
    "é" * 127,
    "CON",
    "a..b",
    "",
]
# File-name stems: anything a file name can hold, "/" and NUL aside.
STEMS = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(st.characters(exclude_characters="/\x00", codec="utf-8"), max_size=255),
    st.text(alphabet=".-_ aA", max_size=8),
)


def _dirs(stems: list[str]) -> list[Path]:
    used: set[str] = set()
    return [_unique_dir(ROOT, s, used) for s in stems]


@settings(max_examples=400, deadline=None)
@given(st.lists(STEMS, min_size=1, max_size=12))
def test_every_output_folder_is_a_distinct_safe_child_of_out(stems: list[str]) -> None:
    dirs = _dirs(stems)
    for d in dirs:
        assert d.parent == ROOT
        assert NAME.fullmatch(d.name), d.name
        assert d.name not in (".", "..")
        assert len(d.name.encode()) <= 104  # 100, and "-NN" for a name already taken
        assert os.path.normpath(d) == str(d)  # nothing to collapse: no ".." anywhere
    # Distinct even where the filesystem ignores case (macOS, Windows shares).
    assert len({d.name.casefold() for d in dirs}) == len(dirs)


@settings(max_examples=300, deadline=None)
@given(STEMS, st.sampled_from(["_1080p.mp4", "_hls", "_2048w.avif", "_poster.jpg", ""]))
def test_a_stage_may_write_any_name_made_from_an_output_name(stem: str, suffix: str) -> None:
    path = output.output_path(ROOT, output.output_name(stem) + suffix)
    assert path.parent == ROOT
    # With the temporary name around it, still within a file name's 255 bytes.
    assert len(f".{path.name}.01234567-01234567-10-abcdef.part.avif".encode()) <= 255


def test_hostile_names_in_one_submission_all_get_their_own_folder() -> None:
    dirs = _dirs(HOSTILE)
    assert len({d.name.casefold() for d in dirs}) == len(HOSTILE)
    assert [d.name for d in dirs[:3]] == ["input", "input-2", "input-3"]
    assert [d.name for d in dirs[18:21]] == ["Photo", "photo-2", "PHOTO-3"]


@pytest.mark.parametrize("part", ["..", ".", "", "a/b", "../x", "/etc/passwd", "a\x00b"])
def test_output_path_refuses_a_part_that_is_not_a_plain_file_name(
    tmp_path: Path, part: str
) -> None:
    with pytest.raises(BadInputError, match="not a plain file name"):
        output.output_path(tmp_path, part)


def test_output_path_refuses_a_symlink_that_leads_out_of_the_folder(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "clip_hls").symlink_to(elsewhere)
    with pytest.raises(BadInputError, match="outside its output folder"):
        output.output_path(out, "clip_hls", "master.m3u8")
    assert output.output_path(out, "clip_720p.mp4") == out / "clip_720p.mp4"


def test_a_stage_given_a_hostile_name_writes_inside_its_folder(
    media: Path, tmp_path: Path, ctx: RecordingContext
) -> None:
    out = tmp_path / "a" / "b" / "out"
    params = {"input": str(media / "no_audio.mp4"), "out_dir": str(out), "name": "../../escaped"}
    result = video_poster(ctx, params, {"probe": probe(media / "no_audio.mp4")})
    assert Path(result["poster"]["path"]).parent == out
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["escaped_poster.jpg"]


def test_a_rung_name_that_leaves_the_folder_fails_the_job_before_ffmpeg_runs(
    media: Path, tmp_path: Path, ctx: RecordingContext
) -> None:
    out = tmp_path / "a" / "out"
    params = {
        "input": str(media / "no_audio.mp4"),
        "out_dir": str(out),
        "name": "clip",
        "rungs": [{"name": "/../../escaped", "height": 120}],
    }
    with pytest.raises(BadInputError, match="not a plain file name"):
        video_ladder(ctx, params, {"probe": probe(media / "no_audio.mp4")})
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_a_name_cut_to_length_never_ends_in_a_dot_underscore_or_dash() -> None:
    assert output.output_name("a" * 99 + "-b") == "a" * 99
    assert output.output_name("_" * 100 + "photo") == "photo"


def _old_check(root: Path, *parts: str) -> bool:
    """The check output_path made before OutputFolder: resolve the path and the folder
    (each through every symlink) and compare."""
    return root.joinpath(*parts).resolve().is_relative_to(root.resolve())


def _symlink_layout(tmp_path: Path) -> Path:
    """An output folder (reached through a symlinked parent) holding symlinks of every kind."""
    real, elsewhere = tmp_path / "real", tmp_path / "elsewhere"
    (real / "out" / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_text("x")
    (tmp_path / "via").symlink_to(real)  # the folder is named through a symlink
    out = real / "out"
    (out / "to_outside_file.jpg").symlink_to(elsewhere / "secret.txt")
    (out / "to_outside_dir").symlink_to(elsewhere)
    (out / "dangling_outside.jpg").symlink_to(elsewhere / "missing.jpg")
    (out / "to_inside.jpg").symlink_to(out / "sub" / "a.jpg")
    (out / "up_and_back.jpg").symlink_to(Path("..") / "out" / "sub" / "b.jpg")
    (out / "to_the_folder").symlink_to(out)
    (out / "to_parent").symlink_to(real)
    (out / "chain.jpg").symlink_to(out / "to_outside_file.jpg")
    (out / "sub" / "back_out.jpg").symlink_to(elsewhere / "secret.txt")
    return tmp_path / "via" / "out"


PARTS = [
    ("plain.jpg",),
    ("to_outside_file.jpg",),
    ("to_outside_dir", "x.m3u8"),
    ("dangling_outside.jpg",),
    ("to_inside.jpg",),
    ("up_and_back.jpg",),
    ("to_the_folder", "x.jpg"),
    ("to_the_folder",),
    ("to_parent", "out", "x.jpg"),
    ("to_parent", "elsewhere.jpg"),
    ("chain.jpg",),
    ("sub", "x.jpg"),
    ("sub", "back_out.jpg"),
    ("missing_dir", "x.jpg"),
]


@pytest.mark.parametrize("parts", PARTS, ids=["/".join(p) for p in PARTS])
def test_output_folder_accepts_exactly_what_resolving_each_path_accepted(
    tmp_path: Path, parts: tuple[str, ...]
) -> None:
    # OutputFolder resolves the folder once and then only follows a part that is a
    # symlink: the same decision as resolving the folder and the whole path every time.
    out = _symlink_layout(tmp_path)
    folder = output.OutputFolder(out)
    if _old_check(out, *parts):
        assert folder.path(*parts) == out.joinpath(*parts)
        assert output.output_path(out, *parts) == out.joinpath(*parts)
    else:
        with pytest.raises(BadInputError, match="outside its output folder"):
            folder.path(*parts)
        with pytest.raises(BadInputError, match="outside its output folder"):
            output.output_path(out, *parts)


def test_output_folder_sees_a_symlink_planted_after_it_was_made(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    folder = output.OutputFolder(out)
    assert folder.path("a_256w.jpg") == out / "a_256w.jpg"
    (out / "a_512w.jpg").symlink_to(elsewhere / "a_512w.jpg")  # between two outputs
    with pytest.raises(BadInputError, match="outside its output folder"):
        folder.path("a_512w.jpg")


def test_a_symlink_loop_still_raises(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(RuntimeError):
        output.output_path(tmp_path, "loop")


class _Reporter:
    def progress(self, *args: object, **kwargs: object) -> None:
        pass

    def add_children(self, *args: object) -> int:
        return 0


def _job(attempt: int) -> ClaimedJob:
    return ClaimedJob(
        id="job-1", queue="default", token="t", stage="s", params={}, dag_id="dag-1",
        name="s", attempt=attempt, max_attempts=3, timeout=60.0, cost=1,
        backoff=Backoff(),
    )  # fmt: skip


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_an_attempt_removes_the_parts_earlier_attempts_left_for_its_output(
    tmp_path: Path, attempt: int
) -> None:
    final = tmp_path / "a.jpg"
    prefix = f".a.jpg.{output.dag_key('dag-1')}-{output._key('job-1')}-"
    left = {n: tmp_path / f"{prefix}{n}-abcdef.part.jpg" for n in (1, 2)}
    other = tmp_path / f".b.jpg.{output.dag_key('dag-1')}-{output._key('job-1')}-1-abcdef.part.jpg"
    for p in [*left.values(), other]:
        p.write_bytes(b"half")
    with running(JobContext(_job(attempt), _Reporter())), output.atomic_output(final) as tmp:
        tmp.write_bytes(b"whole")
    # Attempts count from 1: the first has none before it and keeps what is there (here,
    # what a run of the same attempt number left: a released job is claimed again with it).
    assert {n: p.exists() for n, p in left.items()} == {n: n >= attempt for n in left}
    assert other.exists() and final.read_bytes() == b"whole"
