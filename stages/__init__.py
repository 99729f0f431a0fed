"""Media stages: probe, image renditions, video ladder, thumbnails, audio, HLS, manifest;
and webhook, which the engine runs to announce a DAG's end (not a media stage).

Importing this package declares every stage (``stages.contract.media_stage``): registers
it with the engine and lists it in ``catalog()``, which is what presets build DAGs from.
Stages are plain functions of (ctx, params, inputs) and know nothing of Redis.
"""

from stages import audio, gpu_images, hls, image, manifest, probe, thumbnails, video, webhook
from stages.contract import MediaStage, catalog

__all__ = [
    "MediaStage",
    "audio",
    "catalog",
    "gpu_images",
    "hls",
    "image",
    "manifest",
    "probe",
    "thumbnails",
    "video",
    "webhook",
]
