"""What every engine log line says it is about, in ``extra``: the run and the position.

Through stdlib ``logging``: a JSON formatter or a log shipper can then gather one run's
lines across workers. The names are prefixed so they never collide with a site's own
``extra`` fields; ``position`` is None for a line about the run as a whole.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID


def about(run_id: UUID | str | None, position: int | None = None) -> dict[str, Any]:
    """``extra`` for a log line about ``run_id`` (at ``position``, if it is about a step)."""
    return {
        "agentflow_run_id": None if run_id is None else str(run_id),
        "agentflow_position": position,
    }
