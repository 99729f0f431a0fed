"""Video stages on real files with the real ffmpeg: sizes, durations, rotation, safety."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import BadInputError
from stages.audio import audio_extract
from stages.ffmpeg_run import ffmpeg_exe
from stages.hls import hls_package
from stages.ladder_graph import encoder_threads, ladder_command, plan_rungs
from stages.media_facts import video_facts
from stages.probe import probe
from stages.thumbnails import video_poster, video_sprite
from stages.video import video_ladder
from tests.stages.conftest import RecordingContext

RUNGS = [{"name": "240p", "height": 240}, {"name": "120p", "height": 120}]


def _params(src: Path, out: Path, **extra: Any) -> dict[str, Any]:
    return {"input": str(src), "out_dir": str(out), **extra}


def test_rungs_never_upscale_keep_aspect_and_are_even() -> None:
    assert [
        (r["width"], r["height"])
        for r in plan_rungs(
            1920,
            1080,
            [
                {"name": "1080p", "height": 1080},
                {"name": "720p", "height": 720},
                {"name": "2160p", "height": 2160},
            ],
        )
    ] == [(1920, 1080), (1280, 720)]
    assert [
        (r["width"], r["height"]) for r in plan_rungs(1080, 1920, [{"name": "720p", "height": 720}])
    ] == [(720, 1280)]
    only = plan_rungs(321, 241, [{"name": "480p", "height": 480}])
    assert [(r["width"], r["height"], r["name"]) for r in only] == [(320, 240, "240p")]


def _scales_behind(graph: str, label: str) -> list[str]:
    """The scale sizes an ffmpeg filter graph applies on the way to ``label``, source first."""
    made_by = {}  # output label -> (input label, filter)
    for chain in graph.split(";"):
        src, _, rest = chain[1:].partition("]")
        flt, _, outs = rest.partition("[")
        for out in outs.rstrip("]").split("]["):
            made_by[out] = (src, flt)
    sizes: list[str] = []
    while label in made_by:
        label, flt = made_by[label]
        if flt.startswith("scale="):
            sizes.insert(0, flt.removeprefix("scale="))
    assert label == "0:v"
    return sizes


def test_each_rung_is_scaled_from_the_rung_above_and_encoders_share_the_cores() -> None:
    heights = (("480p", 480), ("1080p", 1080), ("720p", 720))
    rungs = plan_rungs(1920, 1080, [{"name": n, "height": h} for n, h in heights])
    # Given smallest first: the graph still goes 1080p -> 720p -> 480p, outputs in order.
    cmd = ladder_command("in.mp4", rungs[::-1], ["s.mp4", "m.mp4", "l.mp4"], has_audio=False)
    graph = cmd[cmd.index("-filter_complex") + 1]
    maps = [cmd[i + 1].strip("[]") for i, a in enumerate(cmd) if a == "-map"]
    assert [_scales_behind(graph, m) for m in maps] == [
        ["1920:1080", "1280:720", "854:480"],
        ["1920:1080", "1280:720"],
        ["1920:1080"],
    ]
    assert graph.count("scale=") == 3  # one scaler per rung, none repeated
    assert encoder_threads(rungs, cores=2) == [2, 1, 1]
    assert encoder_threads(rungs, cores=16) == [15, 6, 3]
    assert encoder_threads(rungs, threads=4) == [4, 4, 4]  # asked for: as asked
    assert encoder_threads(rungs[:1], cores=16) == [0]  # one encoder: x264 decides
    threads = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-threads"]
    assert sorted(threads) == sorted(str(t) for t in encoder_threads(rungs))


def test_ladder_outputs_decode_with_the_planned_sizes_and_the_source_duration(
    media: Path, tmp_path: Path, ctx: RecordingContext
) -> None:
    src = media / "clip.mp4"
    result = video_ladder(ctx, _params(src, tmp_path, rungs=RUNGS), {"probe": probe(src)})
    got = {r["rung"]: r for r in result["renditions"]}
    assert set(got) == {"240p", "120p"}
    assert (got["240p"]["width"], got["240p"]["height"]) == (320, 240)
    assert (got["120p"]["width"], got["120p"]["height"]) == (160, 120)
    for r in got.values():
        assert r["duration"] == pytest.approx(2.0, abs=1 / 25)
        assert r["frames"] == 50
        assert r["video_codec"] == "h264" and r["audio_codec"] == "aac"
        data = Path(r["path"]).read_bytes()
        assert data.index(b"moov") < data.index(b"mdat"), "not faststart"
        assert r["bytes"] == len(data)
    assert ctx.reports[-1][0] == 100.0
    assert any("speed" in fields for _, _, fields in ctx.reports)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_120p.mp4", "clip_240p.mp4"]


def test_ladder_honours_rotation_and_odd_dimensions(
    media: Path, tmp_path: Path, ctx: RecordingContext
) -> None:
    src = media / "rotated_phone.mp4"
    out = video_ladder(ctx, _params(src, tmp_path), {"probe": probe(src)})["renditions"]
    assert [(r["width"], r["height"]) for r in out] == [(180, 320)]
    assert probe(out[0]["path"])["rotation"] == 0  # the pixels are upright now

    odd = media / "odd_dimensions.mp4"
    out = video_ladder(ctx, _params(odd, tmp_path), {"probe": probe(odd)})["renditions"]
    assert all(r["width"] % 2 == 0 and r["height"] % 2 == 0 for r in out)
    assert (out[0]["width"], out[0]["height"]) == (320, 240)


def test_video_without_audio_gets_a_silent_ladder_and_no_audio_file(
    media: Path, tmp_path: Path, ctx: RecordingContext
) -> None:
    src = media / "no_audio.mp4"
    facts = probe(src)
    out = video_ladder(ctx, _params(src, tmp_path), {"probe": facts})["renditions"]
    assert out[0]["audio_codec"] is None
    assert audio_extract(ctx, _params(src, tmp_path), {"probe": facts})["audio"] is None


def test_audio_is_copied_when_already_aac(
    media: Path, tmp_path: Path, ctx: RecordingContext
) -> None:
    src = media / "clip.mp4"
    a = audio_extract(ctx, _params(src, tmp_path), {"probe": probe(src)})["audio"]
    assert a["copied"] is True and a["audio_codec"] == "aac" and a["format"] == "m4a"
    assert a["duration"] == pytest.approx(2.0, abs=0.1)
    opus = audio_extract(ctx, _params(src, tmp_path, codec="opus"), {"probe": probe(src)})
    assert opus["audio"]["audio_codec"] == "opus"


def test_poster_skips_black_frames(media: Path, tmp_path: Path, ctx: RecordingContext) -> None:
    import pyvips

    src = media / "black_start.mp4"
    poster = video_poster(ctx, _params(src, tmp_path), {"probe": probe(src)})["poster"]
    assert poster["at"] >= 1.0
    img = pyvips.Image.new_from_file(poster["path"])
    assert (img.width, img.height) == (320, 240)
    assert img.avg() > 40  # not a black frame


def test_sprite_tiles_one_thumbnail_per_interval(
    media: Path, tmp_path: Path, ctx: RecordingContext
) -> None:
    src = media / "clip.mp4"
    sprite = video_sprite(
        ctx, _params(src, tmp_path, every=0.5, width=80, columns=2), {"probe": probe(src)}
    )["sprite"]
    assert sprite["count"] == 4 and (sprite["columns"], sprite["rows"]) == (2, 2)
    assert (sprite["width"], sprite["height"]) == (160, 120)


def test_hls_package_plays_back_with_ffmpeg(
    media: Path, tmp_path: Path, ctx: RecordingContext
) -> None:
    src = media / "clip.mp4"
    ladder = video_ladder(ctx, _params(src, tmp_path, rungs=RUNGS), {"probe": probe(src)})
    hls = hls_package(ctx, _params(src, tmp_path), {"video_ladder": ladder})["hls"]
    master = Path(hls["path"])
    assert hls["variants"] == ["240p", "120p"]
    text = master.read_text()
    assert "RESOLUTION=320x240" in text and "RESOLUTION=160x120" in text
    assert (master.parent / "240p" / "init.mp4").exists()
    played = subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-protocol_whitelist",
            "file",
            "-i",
            str(master),
            "-map",
            "0:v:0",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert played.returncode == 0, played.stderr
    assert not [p for p in tmp_path.rglob("*") if ".part" in p.name]


def test_a_corrupt_input_fails_permanently_and_leaves_no_partial_output(
    media: Path, tmp_path: Path, ctx: RecordingContext
) -> None:
    good = probe(media / "clip.mp4")
    broken = tmp_path / "in" / "broken.mp4"
    broken.parent.mkdir()
    data = (media / "clip.mp4").read_bytes()
    broken.write_bytes(data[:200] + bytes(len(data) - 200))  # header kept, payload zeroed
    out = tmp_path / "out"
    with pytest.raises(BadInputError) as info:
        video_ladder(ctx, _params(broken, out), {"probe": good})
    assert str(broken) in str(info.value)
    assert not out.exists() or list(out.iterdir()) == []


def test_a_crafted_playlist_is_refused_even_past_the_probe(
    media: Path, tmp_path: Path, ctx: RecordingContext
) -> None:
    facts = probe(media / "clip.mp4")  # pretend the probe was fooled
    for name in ("evil.m3u8", "evil.mp4"):
        out = tmp_path / name
        with pytest.raises(BadInputError):
            video_ladder(ctx, _params(media / name, out), {"probe": facts})
        assert not out.exists() or list(out.iterdir()) == []


def test_output_facts_are_read_back_from_the_file(media: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.mp4"
    shutil.copy(media / "clip.mp4", copy)
    f = video_facts(copy)
    assert (f["width"], f["height"], f["frames"]) == (320, 240, 50)
