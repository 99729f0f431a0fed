"""Limits that keep hostile or accidental inputs from exhausting a worker.

A decompression bomb (a small file that declares a huge image) must fail fast, from its
header, before any pixel is decoded. Video gets the same treatment on frame size and
duration. Each limit can be raised per preset or through the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Demuxers ffmpeg may use on an input. Playlist and script formats (hls, concat, ...) are
# left out on purpose: they open other files named inside the input, which a crafted
# upload could point at /etc/passwd or at the network.
SAFE_DEMUXERS = (
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,ogg,wav,mp3,aac,flac,"
    "mpeg,asf,ivf,h264,hevc,m4v"
)
SAFE_PROTOCOLS = "file"

# The image formats we accept: per format, the libvips loader that opens it from a Source
# and the libvips class whose loaders (file, buffer, source) stay unblocked; stages/loaders.py
# blocks every other loader. uhdrload is left out on purpose: an Ultra HDR JPEG renders
# through jpegload like any JPEG (its primary image).
IMAGE_FORMATS = {
    "JPEG": ("jpegload_source", "VipsForeignLoadJpeg"),
    "PNG": ("pngload_source", "VipsForeignLoadPng"),
    "GIF": ("gifload_source", "VipsForeignLoadNsgif"),
    "WebP": ("webpload_source", "VipsForeignLoadWebp"),
    "TIFF": ("tiffload_source", "VipsForeignLoadTiff"),
    "HEIF": ("heifload_source", "VipsForeignLoadHeif"),
}
# The loader names libvips reports (``vips-loader``) for those formats.
IMAGE_LOADERS = frozenset(
    name
    for loader, _ in IMAGE_FORMATS.values()
    for name in (loader, loader.removesuffix("_source"))
)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class MediaLimits:
    max_image_pixels: int = 100_000_000
    max_video_pixels: int = 7680 * 4320  # 8K
    max_duration: float = 6 * 3600.0  # seconds

    @classmethod
    def from_env(cls) -> MediaLimits:
        return cls(
            max_image_pixels=_env_int("MEDIAPIPE_MAX_IMAGE_PIXELS", cls.max_image_pixels),
            max_video_pixels=_env_int("MEDIAPIPE_MAX_VIDEO_PIXELS", cls.max_video_pixels),
            max_duration=float(_env_int("MEDIAPIPE_MAX_DURATION", int(cls.max_duration))),
        )
