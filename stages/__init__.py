"""Media stages: probe, image renditions, video ladder, thumbnails, audio, HLS, manifest.

Importing this package registers every stage. Stages are plain functions of
(ctx, params, inputs) and know nothing of Redis.
"""

from stages import audio, gpu_images, hls, image, manifest, probe, thumbnails, video

__all__ = [
    "audio",
    "gpu_images",
    "hls",
    "image",
    "manifest",
    "probe",
    "thumbnails",
    "video",
]
