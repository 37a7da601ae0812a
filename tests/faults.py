"""Crash windows between two writes, for real worker processes to die in.

A worker started with ``AGENTFLOW_TEST_FAULT=<point>`` and ``AGENTFLOW_TEST_FAULT_MARK=
<path>`` SIGKILLs its whole process group (main process and pool, as a machine dying
would: no cleanup, no ack) the first time any of its processes reaches the point; the
marker file makes that once per test. Points:

- ``before_record``: a tool body has returned, and its step's record is being written
  (inline calls and fan-out children alike).
- ``before_join``: a fan-out child's outcome has committed, and it is about to join.

Killing a process from inside a tool cannot reach these: they lie in agentflow's own code
between the body and the commit, or between the commit and the join.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from typing import Any

FAULT = "AGENTFLOW_TEST_FAULT"
MARK = "AGENTFLOW_TEST_FAULT_MARK"


def install_if_asked() -> None:
    """Called from the test app's ``ready``: a no-op unless the environment asks."""
    point = os.environ.get(FAULT)
    if point == "before_record":
        from agentflow._engine import child_runner
        from agentflow._engine.ops import tools

        for owner in (tools.ToolStep, child_runner.ChildOutcome):
            owner.succeeded = _dying_first(owner.succeeded)
    elif point == "before_join":
        from agentflow._engine import fan_out_record

        fan_out_record.join = _dying_first(fan_out_record.join)
    elif point:
        raise ValueError(f"{FAULT}={point!r} names no fault point")


def _dying_first(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            os.close(os.open(os.environ[MARK], os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return fn(*args, **kwargs)
        os.killpg(os.getpgid(0), signal.SIGKILL)
        raise AssertionError("unreachable: the process group was killed")

    return wrapper
