"""Every encoder setting the image stage can use: CPU per megapixel, bytes and quality.

For each format and setting (WebP ``effort`` 0-6; AVIF ``effort`` 0-9 with each AV1
encoder libheif has in the bundled libvips: ``heifsave`` names aom, SVT-AV1 and rav1e, but
pyvips-binary 8.18.7 builds in aom alone (``av1_encoders``); JPEG with and
without optimised Huffman tables and mozjpeg's trellis quantisation, progressive scans and
quant table), every rendition of a small varied image set is encoded ``--reps`` times in
this one process (``VIPS_CONCURRENCY=1``, as in a worker's pool child) and measured:

- CPU: process CPU time (``time.process_time``: every thread of the process, encoder
  threads included) of the encode alone, median of the repetitions; robust to other
  processes' load, unlike wall time. Reported per megapixel of the renditions.
- bytes: the encoded size; also bits per pixel.
- quality, against the encoder's input (the rendition before encoding, 8-bit sRGB):
  SSIM on luma (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03;
  ``skimage.metrics.structural_similarity``) and SSIMULACRA2 (the ``ssimulacra2`` wheel,
  a NumPy port of libjxl's metric: 100 = identical, 90 visually lossless, 70 high, 50
  medium quality; on astronaut as JPEG Q95/85/60/30/10 it gives 92/82/71/56/6), chosen
  because it is the perceptual metric built for compression artefacts that installs from
  the package index as a plain wheel (butteraugli and the C++ SSIMULACRA2 come only with
  libjxl's tools, which Debian's libjxl-tools 0.7 leaves out). Means are weighted by
  pixels; the SSIMULACRA2 mean leaves the noise image out (see ``SCORED_KINDS``).

The image set (``image_set``): real photos and pictures shipped in scikit-image's wheel
(astronaut, coffee, chelsea, rocket, hubble_deep_field; logo; page, a scanned text), and
generated ones: a 1600x1200 photo-like image (``media_gen.make_photo``, the size of the
issue's photos), a flat-colour chart, a 1024x768 page of rendered text, and RGB noise.
Each is rendered at the default preset's widths that fit (2048, 1024, 512, 256; never
upscaled), as the stage does; transparency is flattened onto white first, so that all
formats encode the same pixels. Nothing is downloaded.

Then every combination of one setting per format is priced as the default preset would
be (``--choose``): total bytes, CPU and quality against today's defaults, and the fastest
combination whose total bytes are within 5 % of today's and whose quality is within
``--tolerance`` SSIMULACRA2 points of today's in each format is printed.

usage:
    nice -n 19 python benchmarks/image_encoders.py [--reps 3] [--formats webp,avif,jpeg]
        [--settings "aom e4,svt e4"] [--q avif=44,50,56] [--json FILE] [--choose]
    python benchmarks/image_encoders.py --report FILE [FILE ...] [--choose]

Needs ``pip install -e '.[bench]'`` (scikit-image, ssimulacra2).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("VIPS_CONCURRENCY", "1")  # read by libvips when pyvips loads it
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pyvips

from benchmarks.media_gen import make_photo
from stages.image import DEFAULT_QUALITY, DEFAULT_WIDTHS

UNBOUNDED = 10_000_000
# Today's defaults, before issue 20: libvips' own effort 4 for WebP and AVIF (the stage
# passes none), libheif's first AV1 encoder (aom), JPEG with optimised Huffman tables.
TODAY = {"webp": "e4", "avif": "aom e4", "jpeg": "optimize"}
BYTES_BUDGET = 0.05  # total bytes within 5 % of today's
# SSIMULACRA2 scores any lossy copy of pure noise far below everything else (9-35 here,
# below zero on a tiny crop): the noise image counts in the SSIM mean and has its own
# column, but not in the SSIMULACRA2 mean that decides.
SCORED_KINDS = ("photo", "graphic", "text")
PHOTOS = 6  # images in the "photos" set


@dataclass(frozen=True)
class Setting:
    fmt: str
    label: str
    options: dict[str, Any] = field(hash=False)


def av1_encoders() -> list[str]:
    """The AV1 encoders this libvips really has. libvips falls back to libheif's default
    when the one named is missing, so an encoder whose output is byte for byte aom's, on
    an image and effort where encoders differ, is not there."""
    probe = pyvips.Image.gaussnoise(96, 64, sigma=40, mean=128).bandjoin([80, 160]).cast("uchar")
    aom = bytes(probe.heifsave_buffer(Q=50, effort=4, compression="av1", encoder="aom"))
    found = ["aom"]
    for enc in ("svt", "rav1e"):
        try:
            out = bytes(probe.heifsave_buffer(Q=50, effort=4, compression="av1", encoder=enc))
        except pyvips.Error:
            continue
        if out != aom:
            found.append(enc)
    return found


def settings() -> list[Setting]:
    out = [Setting("webp", f"e{e}", {"effort": e}) for e in range(7)]
    for enc in av1_encoders():
        out += [Setting("avif", f"{enc} e{e}", {"encoder": enc, "effort": e}) for e in range(10)]
    out += [
        Setting("jpeg", "plain", {"optimize_coding": False}),
        Setting("jpeg", "optimize", {"optimize_coding": True}),
        Setting("jpeg", "optimize progressive", {"optimize_coding": True, "interlace": True}),
        Setting("jpeg", "optimize trellis", {"optimize_coding": True, "trellis_quant": True}),
        # sharp's "mozjpeg" option: every mozjpeg tool at once.
        Setting(
            "jpeg",
            "mozjpeg all",
            {
                "optimize_coding": True,
                "trellis_quant": True,
                "overshoot_deringing": True,
                "interlace": True,
                "optimize_scans": True,
                "quant_table": 3,
            },
        ),
    ]
    return out


def encode(image: Any, s: Setting, q: int) -> bytes:
    if s.fmt == "webp":
        return bytes(image.webpsave_buffer(Q=q, keep="none", **s.options))
    if s.fmt == "avif":
        return bytes(image.heifsave_buffer(Q=q, keep="none", compression="av1", **s.options))
    return bytes(image.jpegsave_buffer(Q=q, keep="none", **s.options))


# -- the image set ----------------------------------------------------------------------
SKIMAGE = {
    "astronaut": "photo", "coffee": "photo", "chelsea": "photo", "rocket": "photo",
    "hubble_deep_field": "photo", "logo": "graphic", "page": "text",
}  # fmt: skip


def _chart(w: int = 1200, h: int = 800) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(20)
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=22)
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    d.line([(80, 60), (80, h - 80), (w // 2 + 40, h - 80)], fill="black", width=3)
    for i in range(10):
        top = int(rng.integers(120, h - 140))
        x = 100 + i * 50
        d.rectangle([x, top, x + 36, h - 82], fill=colours[i % 5])
        d.text((x, h - 70), f"{i + 1}", fill="black", font=font)
    box = [w // 2 + 120, 120, w - 80, 120 + (w // 2 - 200)]
    start = 0.0
    for i, share in enumerate((0.35, 0.25, 0.2, 0.12, 0.08)):
        d.pieslice(box, start, start + 360 * share, fill=colours[i], outline="white", width=3)
        start += 360 * share
    for y in range(40):  # a banner gradient: smooth areas next to hard edges
        d.line([(0, y), (w, y)], fill=(20 + 4 * y, 60 + 3 * y, 140 + 2 * y))
    d.text((20, 8), "Quarterly renditions by format", fill="white", font=font)
    return np.asarray(img)


def _text_page(w: int = 1024, h: int = 768) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    words = [
        "pipeline", "renditions", "quality", "encoder", "effort", "worker", "queue", "bytes",
        "megapixel", "preset", "thumbnail", "stage", "lease", "avif", "webp", "jpeg", "resize",
    ]  # fmt: skip
    rng = np.random.default_rng(21)
    img = Image.new("RGB", (w, h), (250, 250, 248))
    d = ImageDraw.Draw(img)
    body, head = ImageFont.load_default(size=15), ImageFont.load_default(size=26)
    y = 16
    while y < h - 30:
        if rng.random() < 0.12:
            d.text((24, y), " ".join(rng.choice(words, 4)).title(), fill=(150, 20, 20), font=head)
            y += 40
        else:
            d.text((24, y), " ".join(rng.choice(words, 15)), fill=(20, 20, 20), font=body)
            y += 21
    return np.asarray(img)


def _srgb8(image: Any) -> Any:
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    if image.bands == 1:
        image = image.colourspace("srgb")
    return image.cast("uchar")


@dataclass
class Rendition:
    source: str
    kind: str
    image: Any  # 8-bit sRGB, in memory

    @property
    def megapixels(self) -> float:
        return float(self.image.width * self.image.height) / 1e6


def _sources(name: str) -> list[tuple[str, str, np.ndarray]]:
    if name == "photos":
        # The preset benchmark's photos (media_gen.photos1600): the same seeds and size.
        return [(f"photo1600_{i:03d}", "photo", np.asarray(make_photo(1000 + i, 1600, 1200)))
                for i in range(PHOTOS)]  # fmt: skip
    from skimage import data

    sources = [(n, kind, getattr(data, n)()) for n, kind in SKIMAGE.items()]
    return [
        *sources,
        ("photo1600", "photo", np.asarray(make_photo(1020, 1600, 1200))),
        ("chart", "graphic", _chart()),
        ("textpage", "text", _text_page()),
        ("noise", "noise", np.random.default_rng(22).integers(0, 256, (512, 512, 3), np.uint8)),
    ]


def image_set(name: str = "varied") -> list[Rendition]:
    """Every rendition of set ``name``: "varied" (photos, graphics, text, noise) or
    "photos" (issue 20's kind of photo, where AVIF's bytes grow most at a lower effort)."""
    sources = _sources(name)  # the arrays must outlive the images made from them
    out = []
    for src_name, kind, arr in sources:
        src = _srgb8(pyvips.Image.new_from_array(np.ascontiguousarray(arr)))
        fits = [w for w in DEFAULT_WIDTHS if w <= src.width] or [src.width]
        for w in fits:
            img = src.thumbnail_image(w, height=UNBOUNDED, size="down") if w < src.width else src
            out.append(Rendition(f"{src_name}@{w}", kind, img.copy_memory()))
    return out


# -- quality ------------------------------------------------------------------------------
def _luma(a: np.ndarray) -> np.ndarray:
    luma: np.ndarray = a[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return luma


def quality(ref: Any, buf: bytes) -> tuple[float, float]:
    """SSIM (luma) and SSIMULACRA2 of ``buf`` decoded, against ``ref``."""
    from skimage.metrics import structural_similarity
    from ssimulacra2 import compute_ssimulacra2

    out = _srgb8(pyvips.Image.new_from_buffer(buf, ""))
    a, b = ref.numpy(), out.numpy()
    ssim = structural_similarity(  # type: ignore[no-untyped-call]
        _luma(a), _luma(b), data_range=255, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False,
    )  # fmt: skip
    # The wheel reads files through Pillow: hand it uncompressed PNGs in memory.
    s2 = compute_ssimulacra2(
        io.BytesIO(ref.pngsave_buffer(compression=0)),
        io.BytesIO(out.pngsave_buffer(compression=0)),
    )
    return float(ssim), float(s2)


# -- measuring ------------------------------------------------------------------------------
def measure(
    s: Setting, q: int, renditions: list[Rendition], reps: int, image_set: str
) -> dict[str, Any]:
    rows = []
    for r in renditions:
        cpu = []
        for _ in range(reps):
            t0 = time.process_time()
            buf = encode(r.image, s, q)
            cpu.append(time.process_time() - t0)
        ssim, s2 = quality(r.image, buf)
        rows.append({"rendition": r.source, "kind": r.kind, "megapixels": r.megapixels,
                     "cpu_s": statistics.median(cpu), "bytes": len(buf), "ssim": ssim,
                     "ssimulacra2": s2})  # fmt: skip
    return {"set": image_set, "fmt": s.fmt, "setting": s.label, "q": q, "options": s.options,
            "rows": rows}  # fmt: skip


def summary(m: dict[str, Any]) -> dict[str, Any]:
    rows = m["rows"]
    mp = sum(r["megapixels"] for r in rows)

    def weighted(key: str, *kinds: str) -> float:
        rs = [r for r in rows if not kinds or r["kind"] in kinds]
        return float(sum(r[key] * r["megapixels"] for r in rs) / sum(r["megapixels"] for r in rs))

    cpu, size = sum(r["cpu_s"] for r in rows), sum(r["bytes"] for r in rows)
    return {
        "set": m.get("set", "varied"),
        "fmt": m["fmt"],
        "setting": m["setting"],
        "q": m["q"],
        "cpu_s": cpu,
        "cpu_ms_per_mp": 1000 * cpu / mp,
        "bytes": size,
        "bpp": 8 * size / (mp * 1e6),
        "ssim": weighted("ssim"),
        "ssimulacra2": weighted("ssimulacra2", *SCORED_KINDS),
        "by_kind": {k: weighted("ssimulacra2", k) for k in sorted({r["kind"] for r in rows})},
    }


def _is_today(s: dict[str, Any]) -> bool:
    return bool(TODAY[s["fmt"]] == s["setting"] and s["q"] == DEFAULT_QUALITY[s["fmt"]])


def table(sums: list[dict[str, Any]]) -> str:
    """One markdown table; relative columns against today's setting of the same set."""
    base = {(s["set"], s["fmt"]): s for s in sums if _is_today(s)}
    kinds = sorted({k for s in sums for k in s["by_kind"]})
    head = ["set", "format", "setting", "Q", "CPU ms/MP", "x today's CPU", "KB", "bytes vs today",
            "bpp", "SSIM", "SSIMULACRA2", *[f"S2 {k}" for k in kinds]]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for s in sorted(sums, key=lambda s: (s["set"] != "varied", s["fmt"], s["setting"], s["q"])):
        b = base.get((s["set"], s["fmt"]))
        cpu_x = f"{s['cpu_s'] / b['cpu_s']:.2f}" if b else ""
        size = f"{100 * (s['bytes'] / b['bytes'] - 1):+.1f} %" if b else ""
        mark = "**" if b is s else ""
        cells = [s["set"], s["fmt"], f"{mark}{s['setting']}{mark}", str(s["q"]),
                 f"{s['cpu_ms_per_mp']:.0f}", cpu_x, f"{s['bytes'] / 1000:.0f}", size,
                 f"{s['bpp']:.2f}", f"{s['ssim']:.4f}", f"{s['ssimulacra2']:.2f}",
                 *[f"{s['by_kind'][k]:.1f}" if k in s["by_kind"] else "" for k in kinds],
                 ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def choose(sums: list[dict[str, Any]], tolerance: float) -> str:
    """Price every combination of one setting per format as the preset would spend it, in
    every image set measured: kept are those whose total bytes are within BYTES_BUDGET of
    today's and whose SSIMULACRA2 is at most ``tolerance`` below today's, per format, in
    every set; fastest first (CPU summed over the sets)."""
    by_set: dict[str, dict[tuple[str, str, int], dict[str, Any]]] = {}
    for s in sums:
        by_set.setdefault(s["set"], {})[(s["fmt"], s["setting"], s["q"])] = s
    common = set.intersection(*(set(v) for v in by_set.values()))
    fmts = sorted({k[0] for k in common})
    options = [[k for k in sorted(common) if k[0] == f] for f in fmts]
    today = {name: {k[0]: v for k, v in d.items() if _is_today(v)} for name, d in by_set.items()}
    ok = []
    for combo in itertools.product(*options):
        verdict = []
        for name, d in by_set.items():
            base = today[name]
            size = sum(d[k]["bytes"] for k in combo) / sum(b["bytes"] for b in base.values())
            cpu = sum(d[k]["cpu_s"] for k in combo)
            worst = min(d[k]["ssimulacra2"] - base[k[0]]["ssimulacra2"] for k in combo)
            if abs(size - 1) > BYTES_BUDGET or worst < -tolerance:
                break
            speedup = sum(b["cpu_s"] for b in base.values()) / cpu
            verdict.append(f"{name} {speedup:.2f}x, bytes {100 * (size - 1):+.1f} %, "
                           f"S2 {worst:+.2f}")  # fmt: skip
        else:
            total = sum(d[k]["cpu_s"] for d in by_set.values() for k in combo)
            ok.append((total, combo, verdict))
    ok.sort(key=lambda c: c[0])
    lines = [
        f"sets {', '.join(by_set)}; combinations within {100 * BYTES_BUDGET:.0f} % of today's "
        f"bytes and {tolerance} SSIMULACRA2 points of today's quality per format in every "
        "set, fastest first (S2: the worst format's change):"
    ]
    for _, combo, verdict in ok[:15]:
        named = ", ".join(f"{f} {label} Q{q}" for f, label, q in combo)
        lines.append(f"  {named}: {'; '.join(verdict)}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--formats", default="webp,avif,jpeg")
    ap.add_argument("--settings", help="only these setting labels (comma-separated)")
    ap.add_argument("--q", action="append", default=[], help="FORMAT=Q,Q,...: Qs to measure")
    ap.add_argument("--set", default="varied", choices=("varied", "photos"), dest="image_set")
    ap.add_argument("--json", help="write every measurement to this file")
    ap.add_argument("--report", nargs="+", help="print the tables of saved --json files")
    ap.add_argument("--choose", action="store_true", help="price the preset's combinations")
    ap.add_argument("--tolerance", type=float, default=1.0, help="SSIMULACRA2 points")
    a = ap.parse_args()
    if a.report:
        runs = [m for f in a.report for m in json.loads(Path(f).read_text())["measurements"]]
    else:
        qs = {f: [q] for f, q in DEFAULT_QUALITY.items()}
        for spec in a.q:
            f, _, values = spec.partition("=")
            qs[f] = [int(v) for v in values.split(",")]
        wanted = set(a.settings.split(",")) if a.settings else None
        todo = [s for s in settings() if s.fmt in a.formats.split(",")
                and (wanted is None or s.label in wanted)]  # fmt: skip
        t0 = time.monotonic()
        renditions = image_set(a.image_set)
        mp = sum(r.megapixels for r in renditions)
        version = ".".join(str(pyvips.version(i)) for i in range(3))
        print(f"{len(renditions)} renditions, {mp:.2f} MP; libvips {version}", file=sys.stderr)
        runs = []
        for s in todo:
            for q in qs[s.fmt]:
                m = measure(s, q, renditions, a.reps, a.image_set)
                runs.append(m)
                x = summary(m)
                print(
                    f"{s.fmt} {s.label} Q{q}: {x['cpu_ms_per_mp']:.0f} ms/MP, "
                    f"{x['bytes'] / 1000:.0f} KB, SSIM {x['ssim']:.4f}, "
                    f"S2 {x['ssimulacra2']:.2f} ({time.monotonic() - t0:.0f} s)",
                    file=sys.stderr,
                )
                if a.json:
                    Path(a.json).write_text(json.dumps({"reps": a.reps, "measurements": runs}))
    sums = [summary(m) for m in runs]
    print(table(sums))
    if a.choose:
        print(choose(sums, a.tolerance))


if __name__ == "__main__":
    main()
