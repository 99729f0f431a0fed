"""Test media for the image and video comparisons, made locally (nothing downloaded).

Made once into a cache folder and reused (files are written under a temporary name and
renamed when complete, so an interrupted run never leaves a half file that counts):

- ``img12mp_NNN.jpg``: 4000x3000 JPEG q90, photo-like so that it costs what a photo costs
  to decode and encode: a colour gradient, multi-octave value noise (upsampled random
  grids) for texture, hard-edged shapes and fine sensor-like noise. A flat or purely random
  image would be unrealistically cheap or expensive to compress.
- ``photos1600/photo1600_NNN.jpg``: 1600x1200 JPEG q90, the same kind of photo at the size
  of issue 20's photos (the default image preset's benchmark).
- ``big_100mp.jpg``: 12000x8333 (99.996 MP, just under the stage's default 100 MP pixel
  limit) JPEG q90: a 3x3 tiling, with mirrored tiles, of one generated 4000x2778 image.
- ``clip1080p_Ns.mp4``: 1080p30 H.264 High (x264 medium, crf 20, closed GOP of 2 s, 3
  B-frames) + AAC 128k stereo: a slow pan over one of the photos with a moving
  ``testsrc2`` inset and light temporal noise, about 10 Mbit/s like a phone upload
  (plain ``testsrc2`` compresses to almost nothing and would flatter the decoder).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

W, H = 4000, 3000
BIG_W, BIG_H = 12000, 8333


def _value_noise(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    from PIL import Image

    gw, gh = max(2, cells), max(2, cells * h // w)
    grid = (rng.random((gh, gw), dtype=np.float32) * 255).astype(np.uint8)
    up = Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(up, np.float32) / 255.0 - 0.5


def make_photo(seed: int, w: int = W, h: int = H) -> Any:
    """A photo-like RGB PIL image (see the module docstring)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    angle = rng.uniform(0, np.pi)
    t = np.cos(angle) * x + np.sin(angle) * y
    t = (t - t.min()) / (float(t.max() - t.min()) + 1e-6)
    texture = sum(
        amp * _value_noise(rng, w, h, cells)
        for cells, amp in ((6, 70.0), (24, 34.0), (100, 16.0), (420, 9.0), (1500, 7.0))
    )
    lo, hi = rng.uniform(25, 225, 3), rng.uniform(25, 225, 3)
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        chroma = 14.0 * _value_noise(rng, w, h, 40)
        img[..., c] = lo[c] * (1 - t) + hi[c] * t + texture + chroma
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(36):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(40, w // 3)), y0 + int(rng.integers(40, h // 3))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], outline=colour, width=int(rng.integers(2, 18)))
        else:
            draw.line([x0, y0, x1, y1], fill=colour, width=int(rng.integers(1, 10)))
    noisy = np.asarray(pil, np.int16) + rng.normal(0, 4.5, (h, w, 1)).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _write_atomic(path: Path, save: Callable[[Path], Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part{path.suffix}")
    try:
        save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _make_one(args: tuple[int, str, str, int, int]) -> str:
    i, folder, prefix, w, h = args
    path = Path(folder) / f"{prefix}_{i:03d}.jpg"
    if not path.exists():
        img = make_photo(1000 + i, w, h)
        _write_atomic(path, lambda p: img.save(p, quality=90))
    return str(path)


def _photo_set(d: Path, prefix: str, n: int, w: int, h: int) -> list[Path]:
    """n photo-like JPEGs ``d/{prefix}_NNN.jpg`` of w x h (made two at a time when missing)."""
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"{prefix}_{i:03d}.jpg" for i in range(n)]
    todo = [(i, str(d), prefix, w, h) for i, p in enumerate(paths) if not p.exists()]
    if todo:
        t0 = time.monotonic()
        with mp.get_context("spawn").Pool(2) as pool:
            pool.map(_make_one, todo, chunksize=1)
        _log(f"made {len(todo)} {w}x{h} JPEGs in {time.monotonic() - t0:.0f}s")
    return paths


def images(folder: Path, n: int) -> list[Path]:
    """n 12 MP JPEGs in ``folder/images``."""
    return _photo_set(folder / "images", "img12mp", n, W, H)


def photos1600(folder: Path, n: int) -> list[Path]:
    """n 1600x1200 JPEGs in ``folder/photos1600`` (issue 20's photos)."""
    return _photo_set(folder / "photos1600", "photo1600", n, 1600, 1200)


def big_image(folder: Path) -> Path:
    path = folder / "big_100mp.jpg"
    if path.exists():
        return path
    import pyvips

    tile_img = make_photo(7, BIG_W // 3, -(-BIG_H // 3))
    tile = pyvips.Image.new_from_array(np.asarray(tile_img))
    row = tile.join(tile.fliphor(), "horizontal").join(tile, "horizontal")
    full = row.join(row.flipver(), "vertical").join(row, "vertical").crop(0, 0, BIG_W, BIG_H)
    _write_atomic(path, lambda p: full.jpegsave(str(p), Q=90))
    return path


def clip(folder: Path, seconds: int, still: Path, timeout: float = 600.0) -> Path:
    """A 1080p30 H.264 + AAC clip of ``seconds`` made from ``still`` (a 4000x3000 photo)."""
    from stages.ffmpeg_run import ffmpeg_exe

    path = folder / f"clip1080p_{seconds}s.mp4"
    if path.exists():
        return path
    graph = (
        "[0:v]crop=1920:1080:x='1000+900*sin(t/5)':y='900+800*sin(t/7)'[bg];"
        "[1:v]scale=480:270[inset];"
        "[bg][inset]overlay=x='80+300*(1+sin(t/3))':y=80:shortest=1,"
        f"noise=alls=4:allf=t,format=yuv420p,trim=duration={seconds}[v]"
    )
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-loop", "1", "-framerate", "30", "-i", str(still),
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-filter_complex", graph, "-map", "[v]", "-map", "2:a", "-ac", "2",
        "-c:v", "libx264", "-preset", "medium", "-crf", "20", "-g", "60", "-keyint_min", "60",
        "-sc_threshold", "0", "-bf", "3", "-c:a", "aac", "-b:a", "128k",
        "-t", str(seconds), "-movflags", "+faststart",
    ]  # fmt: skip

    def make(tmp: Path) -> None:
        subprocess.run([*cmd, str(tmp)], check=True, timeout=timeout, stdin=subprocess.DEVNULL)

    t0 = time.monotonic()
    _write_atomic(path, make)
    _log(f"made {path.name} in {time.monotonic() - t0:.0f}s")
    return path
