"""Real-world video: HDR (PQ, HLG) and 10-bit phone video, rotated and variable-frame-rate
clips. The HDR clips are coded at test time from known colour patches, so the test knows
what each patch must look like in the SDR ladder, poster and sprite."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import pyvips

from pipeline.errors import PermanentError
from stages.color import to_sdr, video_color
from stages.ffmpeg_run import compile_cmd, ffmpeg_exe, run, safe_input
from stages.hls import hls_package
from stages.probe import probe
from stages.thumbnails import video_poster, video_sprite
from stages.video import video_ladder
from tests.stages.conftest import RecordingContext

W, H = 128, 64
# Four patches side by side, in linear BT.709 light relative to diffuse white (203 nits,
# BT.2408): 18 % grey, white, a red and a green.
PATCHES = [(0.18, 0.18, 0.18), (1.0, 1.0, 1.0), (0.5, 0.02, 0.02), (0.02, 0.3, 0.02)]
# What an SDR screen (BT.1886, gamma 2.4) must show for them, in 8-bit RGB: white and
# above are tone-mapped, so white may come out dimmer but never grey.
SDR = [(125, 125, 125), (255, 255, 255), (191, 50, 50), (50, 154, 50)]
BT709_TO_BT2020 = np.array(
    [[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]]
)
TRC = {"pq": "smpte2084", "hlg": "arib-std-b67", "sdr10": "bt709"}


def _pq(nits: Any) -> Any:
    m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
    y = np.clip(nits / 10000, 0, 1) ** m1
    return ((c1 + c2 * y) / (1 + c3 * y)) ** m2


def _hlg(nits: Any) -> Any:
    """The HLG signal that shows ``nits`` on BT.2100's 1,000-nit reference display."""
    e = (np.clip(nits, 0, None) / 1000) ** (1 / 1.2)
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    return np.where(e <= 1 / 12, np.sqrt(3 * e), a * np.log(np.maximum(12 * e - b, 1e-9)) + c)


def _bt1886(linear: Any) -> Any:
    return np.clip(linear, 0, 1) ** (1 / 2.4)


def _patch_frame(kind: str) -> bytes:
    """One yuv420p10le frame (narrow range) of the patches in the given coding."""
    rgb = np.zeros((H, W, 3))
    for i, p in enumerate(PATCHES):
        rgb[:, i * W // 4 : (i + 1) * W // 4] = p
    if kind == "sdr10":
        e = _bt1886(rgb)
        kr, kb = 0.2126, 0.0722
    else:
        nits = (rgb @ BT709_TO_BT2020.T) * 203
        e = _pq(nits) if kind == "pq" else _hlg(nits)
        kr, kb = 0.2627, 0.0593
    y = kr * e[..., 0] + (1 - kr - kb) * e[..., 1] + kb * e[..., 2]
    cb = (e[..., 2] - y) / (2 - 2 * kb)
    cr = (e[..., 0] - y) / (2 - 2 * kr)
    planes = [64 + 876 * y, (512 + 896 * cb)[::2, ::2], (512 + 896 * cr)[::2, ::2]]
    return b"".join(np.round(p).astype("<u2").tobytes() for p in planes)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("colour")
    made = {}
    for kind, trc in TRC.items():
        matrix, primaries = ("bt709", "bt709") if kind == "sdr10" else ("bt2020nc", "bt2020")
        tags = ["-color_primaries", primaries, "-color_trc", trc, "-colorspace", matrix,
                "-color_range", "tv"]  # fmt: skip
        made[kind] = folder / f"{kind}.mp4"
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
             "-pix_fmt", "yuv420p10le", "-s", f"{W}x{H}", "-r", "25", *tags, "-i", "-",
             "-c:v", "libx265", "-x265-params", "log-level=error:lossless=1",
             "-pix_fmt", "yuv420p10le", *tags, str(made[kind])],
            input=_patch_frame(kind) * 25,
            check=True,
        )  # fmt: skip
    return made


def _video_patches(path: str | Path) -> tuple[tuple[str, int, int, int], list[tuple[int, ...]]]:
    """The output's pixel format and colour tags, and each patch's mean RGB as BT.709."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        cc = stream.codec_context
        frame = next(c.decode(stream))
        tags = (frame.format.name, cc.color_primaries, cc.color_trc, cc.colorspace)
        planes = [np.frombuffer(bytes(p), np.uint8).reshape(-1, p.line_size) for p in frame.planes]
    means = []
    for i in range(4):
        x0, x1 = i * W // 4 + W // 16, (i + 1) * W // 4 - W // 16
        y = (planes[0][H // 4 : 3 * H // 4, x0:x1].mean() - 16) / 219
        cb, cr = (
            (p[H // 8 : 3 * H // 8, x0 // 2 : x1 // 2].mean() - 128) / 224 for p in planes[1:]
        )
        r, b = y + 1.5748 * cr, y + 1.8556 * cb
        g = (y - 0.2126 * r - 0.0722 * b) / 0.7152
        means.append(tuple(round(255 * v) for v in (r, g, b)))
    return tags, means


def _image_patches(path: str | Path, width: int) -> list[tuple[int, ...]]:
    img = pyvips.Image.new_from_file(str(path)).colourspace("srgb")
    step = width // 4
    top, rows = img.height // 4, img.height // 2
    crops = [img.crop(i * step + step // 4, top, step // 2, rows) for i in range(4)]
    return [tuple(round(c.extract_band(b).avg()) for b in range(3)) for c in crops]


def _assert_sdr(patches: list[tuple[int, ...]], tolerance: int = 15) -> None:
    grey, white, red, green = patches
    assert abs(grey[0] - SDR[0][0]) <= tolerance, f"grey {grey}"
    assert min(white) >= 200, f"white washed out or dimmed: {white}"
    for got, want in ((red, SDR[2]), (green, SDR[3])):
        assert all(abs(g - w) <= tolerance for g, w in zip(got, want, strict=True)), (got, want)


def _ladder(src: Path, out: Path) -> dict[str, Any]:
    params = {"input": str(src), "out_dir": str(out), "rungs": [{"name": "64p", "height": 64}]}
    result: dict[str, Any] = video_ladder(RecordingContext(), params, {"probe": probe(src)})
    return result


@pytest.mark.parametrize("kind", ["pq", "hlg"])
def test_hdr_is_tone_mapped_to_bt709_sdr_with_true_colours(
    kind: str, clips: dict[str, Path], tmp_path: Path
) -> None:
    rendition = _ladder(clips[kind], tmp_path)["renditions"][0]
    tags, patches = _video_patches(rendition["path"])
    assert tags == ("yuv420p", 1, 1, 1)  # 8-bit, tagged BT.709 primaries, transfer, matrix
    _assert_sdr(patches)


def test_ten_bit_sdr_becomes_eight_bit_with_the_same_colours(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    rendition = _ladder(clips["sdr10"], tmp_path)["renditions"][0]
    tags, patches = _video_patches(rendition["path"])
    assert tags[0] == "yuv420p"
    expected = [tuple(round(255 * float(v)) for v in _bt1886(np.array(p))) for p in PATCHES]
    for got, want in zip(patches, expected, strict=True):
        assert all(abs(g - w) <= 4 for g, w in zip(got, want, strict=True)), (got, want)


@pytest.mark.parametrize("kind", ["pq", "sdr10"])
def test_poster_and_sprite_of_ten_bit_video_are_sdr_with_true_colours(
    kind: str, clips: dict[str, Path], tmp_path: Path
) -> None:
    src = clips[kind]
    facts = probe(src)
    params = {"input": str(src), "out_dir": str(tmp_path)}
    poster = video_poster(RecordingContext(), params, {"probe": facts})["poster"]
    _assert_sdr(_image_patches(poster["path"], poster["width"]), tolerance=20)
    sprite = video_sprite(
        RecordingContext(), {**params, "every": 5.0, "width": W}, {"probe": facts}
    )["sprite"]
    _assert_sdr(_image_patches(sprite["path"], W), tolerance=20)


def test_without_zscale_hlg_changes_gamut_and_pq_fails_with_the_reason(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "hlg.mp4"
    video = to_sdr(safe_input(str(clips["hlg"])).video, video_color(clips["hlg"]), zimg=False)
    run(compile_cmd(video.output(str(out), vcodec="libx264", crf=10)), source="hlg")
    grey, white, red, green = _video_patches(out)[1]
    assert 95 <= grey[0] <= 135 and min(white) >= 180, (grey, white)
    assert red[0] - max(red[1:]) >= 100 and green[1] - max(green[0], green[2]) >= 70
    with pytest.raises(PermanentError, match=r"PQ .* needs ffmpeg's zscale filter"):
        to_sdr(safe_input(str(clips["pq"])).video, video_color(clips["pq"]), zimg=False)


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stored 96x64 with the top half white; a display matrix turns it 90 degrees
    counter-clockwise, so it shows 64x96 with the white half on the left."""
    folder = tmp_path_factory.mktemp("rotated")
    plain, clip = folder / "plain.mp4", folder / "rotated.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "color=c=black:size=96x64:rate=25:duration=2",
         "-vf", "drawbox=x=0:y=0:w=96:h=32:color=white:t=fill",
         "-c:v", "libx264", "-preset", "ultrafast", str(plain)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-display_rotation", "90",
         "-i", str(plain), "-c", "copy", str(clip)],
        check=True,
    )  # fmt: skip
    return clip


def _left_and_right_luma(path: str | Path) -> tuple[int, int, int, int, float]:
    with av.open(str(path)) as c:
        frame = next(c.decode(c.streams.video[0]))
        luma = frame.to_ndarray(format="gray")
    half = luma.shape[1] // 2
    return (
        frame.width,
        frame.height,
        round(luma[:, : half - 4].mean()),
        round(luma[:, half + 4 :].mean()),
        frame.rotation,
    )


def test_a_rotated_clip_renders_upright_with_swapped_dimensions(
    rotated: Path, tmp_path: Path
) -> None:
    facts = probe(rotated)
    assert (facts["width"], facts["height"]) == (64, 96)
    rendition = _ladder(rotated, tmp_path)["renditions"][0]
    width, height, left, right, rotation = _left_and_right_luma(rendition["path"])
    assert (width, height, rotation) == (64, 96, 0)  # upright pixels, no display matrix
    assert left > 200 and right < 40, (left, right)
    params = {"input": str(rotated), "out_dir": str(tmp_path)}
    poster = video_poster(RecordingContext(), params, {"probe": facts})["poster"]
    assert (poster["width"], poster["height"]) == (64, 96)


def test_a_variable_frame_rate_clip_keeps_its_duration(tmp_path: Path) -> None:
    """30 fps for one second, then 10 fps for two: 50 frames over three seconds."""
    clip = tmp_path / "vfr.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=30:duration=3",
         "-vf", "select='lt(n\\,30)+not(mod(n\\,3))'", "-fps_mode", "vfr",
         "-c:v", "libx264", "-preset", "ultrafast", str(clip)],
        check=True,
    )  # fmt: skip
    facts = probe(clip)
    ladder = _ladder(clip, tmp_path)
    rendition = ladder["renditions"][0]
    # Every frame at its own time: none duplicated to a constant rate, none dropped.
    with av.open(rendition["path"]) as c:
        times = [f.time for f in c.decode(c.streams.video[0])]
    assert len(times) == 50
    assert times[29:32] == pytest.approx([29 / 30, 1.0, 1.1], abs=0.01)
    assert times[-1] == pytest.approx(2.9, abs=0.01)
    # The container's duration ends at the last frame's time plus its duration, which
    # ffmpeg estimates (source: 2.93 s); x264's B-frames shift the estimate by 2 frames.
    assert rendition["duration"] == pytest.approx(facts["duration"], abs=0.07)
    hls = hls_package(
        RecordingContext(), {"input": str(clip), "out_dir": str(tmp_path)}, {"video_ladder": ladder}
    )["hls"]
    assert hls["duration"] == pytest.approx(facts["duration"], abs=0.07)
