"""``python -m mediajobs``: the ``mediapipe`` command, for environments without the script
(its usage lines and messages name it ``mediapipe`` too)."""

from mediajobs.cli import main

main(prog_name="mediapipe")
