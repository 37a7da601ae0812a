"""Exit codes of ``manage.py agentflow start --wait``: what a script or CI job branches on.

| code | the run |
|---|---|
| 0 | succeeded |
| 1 | was not started: bad arguments, an unknown agent (Django's ``CommandError``) |
| 3 | failed |
| 4 | was cancelled |
| 5 | waits for a person: a pending approval, or paused (a budget, a loop guard) |
| 6 | is still going when ``--timeout`` ran out |
"""

from __future__ import annotations

from enum import IntEnum

from agentflow.models import Run


class ExitCode(IntEnum):
    SUCCEEDED = 0
    NOT_STARTED = 1
    FAILED = 3
    CANCELLED = 4
    NEEDS_A_PERSON = 5
    STILL_GOING = 6


def exit_code(run: Run, *, waiting_for_a_person: bool) -> ExitCode:
    """The code for the state ``follow`` left ``run`` in."""
    if run.status == Run.Status.SUCCEEDED:
        return ExitCode.SUCCEEDED
    if run.status == Run.Status.FAILED:
        return ExitCode.FAILED
    if run.status == Run.Status.CANCELLED:
        return ExitCode.CANCELLED
    if run.status == Run.Status.PAUSED or waiting_for_a_person:
        return ExitCode.NEEDS_A_PERSON
    return ExitCode.STILL_GOING
