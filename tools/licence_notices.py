"""Write the licence notices of everything installed in this Python environment.

Run inside the worker image's build (Dockerfile): for each distribution, its name, version
and declared licence, and its licence files copied beside the listing, so the image carries
the notices of what it ships. The ffmpeg binary inside imageio-ffmpeg is a GPL build, and
libvips inside pyvips-binary is LGPL with its own bundled libraries: both are named at the
top, with where their texts are.

    python tools/licence_notices.py OUT_DIR
"""

from __future__ import annotations

import shutil
import sys
from importlib import metadata
from pathlib import Path

BUNDLED = {
    "imageio-ffmpeg": "ships a static ffmpeg build (GPL v3; its licence text is in the "
    "wheel's files and `ffmpeg -L` prints it)",
    "pyvips-binary": "ships libvips (LGPL 2.1+) and the libraries it is built with",
    "av": "ships FFmpeg's libraries (LGPL 2.1+ build)",
}


def licence_of(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    text = meta.get("License-Expression") or meta.get("License") or ""
    if not text or len(text) > 100:
        classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []
                       if c.startswith("License ::")]  # fmt: skip
        text = ", ".join(classifiers) or (text.splitlines()[0] if text else "see files")
    return text


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = ["Licence notices of the Python distributions in this image.", ""]
    dists = sorted(metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower())
    for dist in dists:
        name = dist.metadata["Name"] or "?"
        lines.append(f"{name} {dist.version}: {licence_of(dist)}")
        if name.lower() in BUNDLED:
            lines.append(f"    {BUNDLED[name.lower()]}")
        for f in dist.files or ():
            path = Path(str(f))
            texts = path.suffix.lower() in ("", ".txt", ".md", ".rst")
            if texts and path.name.upper().startswith(("LICEN", "COPYING", "NOTICE")):
                src = Path(str(dist.locate_file(f)))
                if src.is_file():
                    dest = out / name / path.name
                    if dest.exists():
                        continue
                    dest.parent.mkdir(exist_ok=True)
                    shutil.copyfile(src, dest)
                    lines.append(f"    {name}/{dest.name}")
    (out / "NOTICES.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
