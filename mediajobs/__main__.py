"""``python -m mediajobs``: the ``mediapipe`` command, for environments without the script."""

from mediajobs.cli import main

main()
