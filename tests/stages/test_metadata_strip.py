"""Video outputs carry none of the source's location and personal metadata, unless the
preset keeps it; every output with a picture reports its size."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import av
import pytest

from mediajobs.presets import build_dag, load, validate
from pipeline.errors import SubmissionError
from stages.audio import audio_extract
from stages.ffmpeg_run import ffmpeg_exe
from stages.hls import hls_package
from stages.probe import probe
from stages.thumbnails import video_poster, video_sprite
from stages.video import video_ladder
from tests.stages.conftest import RecordingContext

LOCATION = "+48.8584+002.2945/"
SECRETS = {
    "title": "Secret Title 4711",
    "comment": "Secret Comment 4711",
    "handler": "Secret Handler 4711",
    "audio handler": "Secret Sound 4711",
    "chapter": "Secret Chapter 4711",
}
RUNGS = [{"name": "96p", "height": 96}, {"name": "48p", "height": 48}]


@pytest.fixture(scope="module")
def tagged_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phone-like clip: GPS location, title, comment, handler names and a named chapter."""
    folder = tmp_path_factory.mktemp("tagged")
    chapters = folder / "chapters.txt"
    chapters.write_text(
        f";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1000\ntitle={SECRETS['chapter']}\n"
    )
    clip = folder / "tagged.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=144x96:rate=25:duration=2",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
         "-i", str(chapters), "-map", "0:v", "-map", "1:a", "-map_chapters", "2",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
         "-metadata", f"location={LOCATION}", "-metadata", f"title={SECRETS['title']}",
         "-metadata", f"comment={SECRETS['comment']}",
         "-metadata", "creation_time=2021-06-01T12:00:00Z",
         "-metadata:s:v", f"handler_name={SECRETS['handler']}",
         "-metadata:s:a", f"handler_name={SECRETS['audio handler']}",
         str(clip)],
        check=True,
    )  # fmt: skip
    tags = _tags(clip)
    assert LOCATION in tags and SECRETS["title"] in tags and SECRETS["chapter"] in tags
    return clip


def _tags(path: Path) -> str:
    """Every tag value ffprobe would show: container, streams and chapters."""
    with av.open(str(path)) as c:
        values = list(c.metadata.values())
        for s in c.streams:
            values += s.metadata.values()
        for chapter in c.chapters():
            values += chapter["metadata"].values()
    return "\n".join(values)


def _all_outputs(tagged_clip: Path, out: Path, **extra: Any) -> dict[str, Any]:
    params = {"input": str(tagged_clip), "out_dir": str(out), **extra}
    facts = probe(tagged_clip)
    ctx = RecordingContext()
    ladder = video_ladder(ctx, {**params, "rungs": RUNGS}, {"probe": facts})
    return {
        "ladder": ladder,
        "hls": hls_package(ctx, params, {"video_ladder": ladder}),
        "poster": video_poster(ctx, params, {"probe": facts}),
        "sprite": video_sprite(ctx, {**params, "every": 1.0, "width": 48}, {"probe": facts}),
        "audio": audio_extract(ctx, params, {"probe": facts}),
    }


@pytest.fixture(scope="module")
def stripped(tagged_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("stripped")
    return {"out": out, **_all_outputs(tagged_clip, out)}


def test_no_output_carries_location_title_handler_names_or_chapters(
    stripped: dict[str, Any],
) -> None:
    files = sorted(p for p in Path(stripped["out"]).rglob("*") if p.is_file())
    # Ladder rungs, HLS playlists, init segments and media segments, poster, sprite, audio.
    suffixes = {p.suffix for p in files}
    assert {".mp4", ".m3u8", ".m4s", ".jpg", ".m4a"} <= suffixes
    for f in files:
        data = f.read_bytes()
        for secret in [*SECRETS.values(), "2021-06-01"]:
            assert secret.encode() not in data, f"{f.name} carries {secret!r}"
        if f.suffix in (".mp4", ".m4a"):
            tags = _tags(f)
            assert LOCATION not in tags and "2021-06-01" not in tags, f"{f.name}: {tags}"
            with av.open(str(f)) as c:
                assert not c.chapters(), f"{f.name} keeps chapters"
                assert not [s for s in c.streams if s.type not in ("video", "audio")]


def test_every_output_with_a_picture_reports_its_size(stripped: dict[str, Any]) -> None:
    master = stripped["hls"]["hls"]
    largest = stripped["ladder"]["renditions"][0]
    assert (master["width"], master["height"]) == (144, 96) == (largest["width"], largest["height"])
    for key in ("poster", "sprite"):
        facts = stripped[key][key]
        assert facts["width"] > 0 and facts["height"] > 0, key
    assert (stripped["sprite"]["sprite"]["width"], stripped["sprite"]["sprite"]["height"]) == (
        96,
        32,
    )


def test_a_preset_that_keeps_metadata_keeps_the_location(tagged_clip: Path, tmp_path: Path) -> None:
    facts = probe(tagged_clip)
    params = {"input": str(tagged_clip), "out_dir": str(tmp_path), "keep_metadata": True}
    ladder = video_ladder(RecordingContext(), {**params, "rungs": RUNGS[1:]}, {"probe": facts})
    assert LOCATION in _tags(Path(ladder["renditions"][0]["path"]))
    audio = audio_extract(RecordingContext(), params, {"probe": facts})
    assert SECRETS["title"] in _tags(Path(audio["audio"]["path"]))


def test_keep_metadata_is_a_preset_switch_off_by_default(tmp_path: Path) -> None:
    video = load("video")
    assert video["keep_metadata"] is False
    kept = {**video, "keep_metadata": True}
    dag = build_dag("/in/clip.mp4", "/out/clip", kept)
    # The switch reaches every stage that declares it; poster and sprite always strip.
    keeping = {n.stage for n in dag.nodes.values() if n.params.get("keep_metadata") is True}
    assert keeping == {"video_ladder", "hls_package", "audio_extract"}
    with pytest.raises(SubmissionError, match="keep_metadata must be true or false"):
        validate({**video, "keep_metadata": "yes"}, "mine.toml")
    with pytest.raises(SubmissionError, match=r"keep_metadata applies to video presets"):
        validate({**load("image"), "keep_metadata": True}, "photos.toml")
