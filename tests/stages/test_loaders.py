"""Untrusted files reach only the libvips loader their magic bytes name, from the allow-list;
libvips' own warnings stay off stderr (debug log only)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import pyvips

import stages.image  # noqa: F401  (importing the stages is what locks libvips down)
from pipeline.errors import BadInputError
from stages.image import render
from stages.probe import probe

ROOT = Path(__file__).resolve().parents[2]


class FifoWatch:
    """Notices whether anything opens a named pipe for reading, and lets it go on."""

    def __init__(self, fifo: Path) -> None:
        self.fifo, self.opened = fifo, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:  # succeeds only while a reader has the pipe open
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.005)
                continue
            self.opened = True
            os.write(fd, b"secret")
            os.close(fd)

    def __enter__(self) -> FifoWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.1)
        self._stop.set()
        self._thread.join(2)


def test_an_svg_named_jpg_never_reaches_the_svg_parser(tmp_path: Path) -> None:
    # librsvg resolves references to files next to the SVG: a named pipe shows whether
    # anything parsed the drawing (whatever rejected it afterwards).
    os.mkfifo(tmp_path / "next-door")
    upload = tmp_path / "upload.jpg"
    upload.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xi="http://www.w3.org/2001/XInclude"'
        ' width="40" height="30"><text><xi:include href="next-door" parse="text"/></text>'
        '<image href="next-door" width="10" height="10"/></svg>'
    )
    with FifoWatch(tmp_path / "next-door") as watch:
        with pytest.raises(BadInputError) as probed:
            probe(upload)
        with pytest.raises(BadInputError) as rendered:
            render(upload, tmp_path / "out")
    assert not watch.opened, "a loader parsed the SVG and opened the file it names"
    assert "unsupported or corrupt media" in str(probed.value)
    assert "not an image" in str(rendered.value) and "svgload" not in str(rendered.value)


@pytest.mark.parametrize(
    ("loader", "content"),
    [
        ("svgload_source", b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'),
        ("matrixload_source", b"2 2\n1 2\n3 4\n"),  # not flagged untrusted by libvips
        ("csvload_source", b"1,2\n3,4\n"),
        ("vipsload_source", b"\x08\xf2\xa6\xb6" + bytes(60)),
    ],
)
def test_loaders_outside_the_allow_list_are_blocked(
    loader: str, content: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    with pytest.raises(pyvips.Error, match=r"blocked|not a known"):
        pyvips.Operation.call(loader, pyvips.Source.new_from_file(str(path))).avg()
    with pytest.raises(pyvips.Error, match=r"not a known|blocked"):
        pyvips.Image.new_from_file(str(path)).avg()


def test_library_warnings_go_to_the_debug_log_not_stderr(tmp_path: Path) -> None:
    # A gradient: the scan data is long, so a cut at two thirds leaves the header whole.
    image = pyvips.Image.xyz(320, 240).extract_band(0).cast("uchar").bandjoin([40, 90])
    good = bytes(image.jpegsave_buffer(Q=90))
    marker = good.index(b"\xff\xdb")
    (tmp_path / "junk.jpg").write_bytes(good[:marker] + b"\x00\x01\x02" + good[marker:])
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) * 2 // 3])
    script = (
        "import logging, sys\n"
        "from pipeline.errors import BadInputError\n"
        "from stages.image import render\n"
        "from stages.probe import probe\n"
        # As `mediapipe submit` sets logging up, without and with --debug.
        "level = logging.DEBUG if sys.argv[1] == 'debug' else logging.WARNING\n"
        "logging.basicConfig(level=level, format='%(name)s %(levelname)s %(message)s')\n"
        f"d = {str(tmp_path)!r}\n"
        "probe(d + '/junk.jpg'); render(d + '/junk.jpg', d + '/out')\n"
        "try:\n"
        "    render(d + '/cut.jpg', d + '/out2')\n"
        "except BadInputError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-c", script]
    quiet = subprocess.run([*run, "quiet"], env=env, capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert quiet.stdout.count("\n") == 1 and "cut.jpg: cannot decode image" in quiet.stdout
    debug = subprocess.run([*run, "debug"], env=env, capture_output=True, text=True, timeout=60)
    assert "mediapipe.libvips DEBUG" in debug.stderr and "extraneous bytes" in debug.stderr
    assert "pyvips" not in debug.stderr  # pyvips' per-call chatter and libvips' traces
