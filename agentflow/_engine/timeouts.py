"""Run a tool body under a deadline.

In a worker's main thread (prefork and solo pools) an interval timer interrupts the body
with SIGALRM, as Celery's own soft time limit does. Elsewhere (the embedded worker's
thread) the body runs in a helper thread that is abandoned at the deadline: it cannot be
killed, which is why side-effecting tools should use their idempotency key.
"""

from __future__ import annotations

import concurrent.futures
import signal
import threading
from collections.abc import Callable
from typing import Any


def call_with_timeout(
    fn: Callable[..., Any], kwargs: dict[str, Any], timeout: float | None, what: str
) -> Any:
    """Return ``fn(**kwargs)``; raise ``TimeoutError`` if it takes longer than ``timeout``."""
    if not timeout:
        return fn(**kwargs)
    message = f"{what} exceeded its timeout of {timeout:g}s"
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _with_alarm(fn, kwargs, timeout, message)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentflow-tool")
    try:
        return pool.submit(fn, **kwargs).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(message) from None
    finally:
        pool.shutdown(wait=False)


def _with_alarm(
    fn: Callable[..., Any], kwargs: dict[str, Any], timeout: float, message: str
) -> Any:
    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(**kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
