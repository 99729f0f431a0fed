"""A preset is checked against what each stage accepts before anything is queued; where
outputs go is never a preset's to say."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediajobs import presets
from pipeline.errors import SubmissionError

VIDEO = 'kind = "video"\n[video_ladder]\n'
IMAGE = 'kind = "image"\n[image_renditions]\n'
ROUTING_KEYS = ("input", "out_dir", "name", "storage", "service", "endpoint")
STAGES = (
    "image_renditions",
    "video_ladder",
    "hls_package",
    "video_poster",
    "video_sprite",
    "audio_extract",
)


def _load(tmp_path: Path, text: str) -> dict[str, object]:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return presets.load(str(path))


def _rejects(tmp_path: Path, text: str, *needles: str) -> str:
    with pytest.raises(SubmissionError) as err:
        _load(tmp_path, text)
    message = str(err.value)
    assert str(tmp_path / "p.toml") in message
    for needle in needles:
        assert needle in message, message
    return message


def test_the_built_in_presets_pass_their_own_checks() -> None:
    assert presets.load("image")["kind"] == "image"
    assert presets.load("video")["kind"] == "video"


@pytest.mark.parametrize("key", ROUTING_KEYS)
@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_table_may_set_where_things_go(tmp_path: Path, stage: str, key: str) -> None:
    kind = "image" if stage == "image_renditions" else "video"
    essential = "image_renditions" if kind == "image" else "video_ladder"
    extra = f"[{essential}]\n" if stage != essential else ""
    text = f'kind = "{kind}"\n{extra}[{stage}]\n{key} = "/elsewhere"\n'
    _rejects(tmp_path, text, f"[{stage}]", repr(key), "not allowed")


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (IMAGE + "widht = [32]\n", ("unknown key 'widht'", "widths")),
        (IMAGE + 'widths = ["big"]\n', ("widths must be a list",)),
        (IMAGE + "widths = [0]\n", ("widths",)),
        (IMAGE + "widths = []\n", ("widths",)),
        (IMAGE + 'formats = ["gif"]\n', ("formats",)),
        (IMAGE + 'formats = ["../x"]\n', ("formats",)),
        (IMAGE + "animated = 1\n", ("animated must be true or false",)),
        (IMAGE + "[image_renditions.quality]\nwebp = 101\n", ("quality",)),
        (IMAGE + "[image_renditions.quality]\njpg = 90\n", ("quality", "'jpg'")),
        (IMAGE + "[image_renditions.effort]\nwebp = 9\n", ("effort",)),
        (IMAGE + 'keep = "icc,gps"\n', ("keep",)),
        (IMAGE + 'fail_on = "never"\n', ("fail_on",)),
        (VIDEO + 'x264_preset = "no-such-preset"\n', ("x264_preset",)),
        (VIDEO + 'audio_bitrate = "lots"\n', ("audio_bitrate",)),
        (VIDEO + "threads = true\n", ("threads",)),
        (VIDEO + 'gpu = "yes"\n', ("gpu",)),
        (VIDEO + 'rungs = [{ name = "../../x", height = 240 }]\n', ("rungs",)),
        (VIDEO + 'rungs = [{ name = "a b", height = 240 }]\n', ("rungs",)),
        (VIDEO + 'rungs = [{ name = "240p" }]\n', ("rungs",)),
        (VIDEO + 'rungs = [{ name = "240p", height = 240, crf = 60 }]\n', ("crf",)),
        (VIDEO + 'rungs = [{ name = "240p", height = 240, widht = 1 }]\n', ("'widht'",)),
        (
            VIDEO + 'rungs = [{ name = "a", height = 240 }, { name = "a", height = 120 }]\n',
            ("distinct names",),
        ),
        (VIDEO + "[hls_package]\nsegment_seconds = 0\n", ("segment_seconds",)),
        (VIDEO + "[video_sprite]\ncolumns = 0\n", ("columns",)),
        (VIDEO + '[audio_extract]\ncodec = "mp3"\n', ("codec",)),
        (VIDEO + "[image_renditions]\n", ("[image_renditions] does not apply to kind video",)),
        ('kind = "video"\nname = 5\n[video_ladder]\n', ("name must be",)),
    ],
)
def test_a_bad_key_or_value_names_the_file_the_table_and_the_key(
    tmp_path: Path, text: str, needles: tuple[str, ...]
) -> None:
    _rejects(tmp_path, text, *needles)


def test_every_key_a_stage_accepts_loads(tmp_path: Path) -> None:
    image = _load(
        tmp_path,
        IMAGE + 'widths = [64, 32]\nformats = ["webp", "jpg"]\nanimated = true\n'
        'keep = ["icc", "exif"]\nmax_pixels = 1000000\nfail_on = "warning"\n'
        "quality = { webp = 70, jpeg = 80 }\neffort = { webp = 6, avif = 9 }\n",
    )
    assert image["image_renditions"] == {
        "widths": [64, 32],
        "formats": ["webp", "jpg"],
        "animated": True,
        "keep": ["icc", "exif"],
        "max_pixels": 1000000,
        "fail_on": "warning",
        "quality": {"webp": 70, "jpeg": 80},
        "effort": {"webp": 6, "avif": 9},
    }
    video = _load(
        tmp_path,
        VIDEO + 'x264_preset = "slow"\naudio_bitrate = "96k"\nthreads = 2\ngpu = "off"\n'
        'rungs = [{ name = "hd_1", height = 720, crf = 20, maxrate = "3M", bufsize = "6M" }]\n'
        "[hls_package]\nsegment_seconds = 6\n[video_poster]\nwidth = 640\n"
        "[video_sprite]\nevery = 1.5\nwidth = 120\ncolumns = 8\n"
        '[audio_extract]\ncodec = "opus"\nbitrate = "64k"\n',
    )
    assert set(video) >= {"video_ladder", "hls_package", "video_poster", "audio_extract"}


def test_a_preset_built_in_code_is_checked_too() -> None:
    preset = {"name": "x", "kind": "image", "image_renditions": {"out_dir": "/elsewhere"}}
    with pytest.raises(SubmissionError, match="'out_dir' is not allowed"):
        presets.build_dag("/in/a.jpg", "/out/a", preset)


def test_the_dag_name_is_a_safe_output_name() -> None:
    dag = presets.build_dag("/in/...jpg", "/out/x", presets.load("image"), name="../../up")
    assert dag.nodes["image_renditions"].params["name"] == "up"
