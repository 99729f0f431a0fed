"""The media application on top of the engine: what ``mediapipe`` does with presets, media
files and worker boxes.

Layers, top to bottom (docs/architecture.md): ``mediajobs`` (this package) may import
``workers``, ``stages`` and ``pipeline``; nothing below imports it. It is named after the
distribution so it cannot collide with another project's package on ``sys.path``.
"""
