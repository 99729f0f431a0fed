"""A stage whose failure an operator can fix, so retrying it from the dashboard succeeds.

Workers load it with ``--import tests.dashboard.dash_stages``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import PermanentError
from pipeline.registry import REGISTRY, stage


@stage("dash.needs_fix", registry=REGISTRY, attempts=2)
def needs_fix(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Fails permanently (straight to the dead-letter queue) until the ``fixed`` file exists."""
    if not Path(params["fixed"]).exists():
        raise PermanentError(f"{params['path']}: not a media file")
    return {"path": params["path"]}
