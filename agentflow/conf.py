"""The ``AGENTFLOW`` settings dict, with defaults, read lazily and reloaded on change.

Never read at import time: ``get()`` builds the merged dict on first use and the
``setting_changed`` receiver in ``apps.py`` clears the cache (as debug-toolbar does).
Caches built from these settings elsewhere (the gates' rows and patterns) register with
``on_reload`` and are cleared with it, so this module imports none of them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from django.conf import settings

# Provider API keys (OpenAI/Anthropic style, AWS key ids, GitHub, Slack, Google), bearer
# tokens and email addresses.
DEFAULT_REDACT: tuple[str, ...] = (
    r"\bsk-[A-Za-z0-9_\-]{16,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}",
    r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",
    r"\bAIza[0-9A-Za-z_\-]{35}",
    r"\b(?i:bearer)[\s\x0b\p{Z}]+[A-Za-z0-9\-._~+/]{8,}=*",  # RE2's \s is ASCII
    r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
)

DEFAULTS: dict[str, Any] = {
    # Celery queue for agentflow's tasks; None means the site's default queue.
    "QUEUE": None,
    # How long a worker holds a run without renewing its lease. Recovery after a
    # worker dies takes at most about this long plus RECONCILE_EVERY.
    "LEASE_SECONDS": 15.0,
    # How often each worker process's reconciler (run from its heartbeat thread) looks for
    # runs to bring back; beat's agentflow.reconcile entry is only an extra trigger.
    "RECONCILE_EVERY": 5.0,
    # A step output, tool argument set, event or input larger than this is refused.
    "MAX_PAYLOAD_BYTES": 1_000_000,
    # A run whose pinned agent version is not deployed here is retried this often.
    "VERSION_RETRY_SECONDS": 60.0,
    # Timers further out than this are left to the reconciler instead of a Celery
    # countdown, which Redis would redeliver after its visibility timeout.
    "MAX_COUNTDOWN_SECONDS": 300.0,
    # Redis for fleet-wide rate limits and concurrency slots. None: the Celery broker when
    # it is Redis, else an in-process store (the embedded default).
    "REDIS_URL": None,
    # Slack added to each rate-limit period, so start-time jitter never lets N + 1 calls
    # land in one window (it costs guard / period of the rate: 2 % of 1/s).
    "RATE_LIMIT_GUARD_SECONDS": 0.02,
    # Policy rows are re-read by each worker at most this often.
    "POLICY_CACHE_SECONDS": 2.0,
    # A fan-out child whose wake-up has not arrived after this long is sent again
    # (a lost message, e.g. after a Redis restart); the claim makes the copy harmless.
    "REDISPATCH_SECONDS": 60.0,
    # Header tasks per Celery chord; larger fan-outs are sent as several chords, each by
    # its own task, so several workers send them at once.
    "CHORD_SIZE": 100,
    # Header tasks per fan-out at most (and at most twice the fleet's processes, when
    # Redis keeps the census): beyond this many children, children share tasks.
    "FAN_OUT_TASKS": 256,
    # A header task that runs several children stops taking the next one after this long
    # and sends the rest back to the queue, so control messages queued meanwhile (a killed
    # run's wake-up) wait for one child, not for the whole task.
    "FAN_OUT_TASK_SECONDS": 0.25,
    # Prepare agentflow's own fixed statements on PostgreSQL (psycopg 3), whatever Django's
    # prepare_threshold: the server parses and plans each once per connection. False
    # behind a pooler that cannot keep prepared statements (PgBouncer before 1.21 in
    # transaction mode); a database with DISABLE_SERVER_SIDE_CURSORS is never prepared.
    "PREPARE_STATEMENTS": True,
    # Delete finished runs older than this ("30d", "12h"; None: keep them) once a day,
    # from the beat schedule of agentflow.beat.beat_schedule().
    "RETENTION": None,
    # Dotted path of the object that sends wake-ups (see engine.ports.Dispatcher).
    "DISPATCHER": "agentflow.tasks.CeleryDispatcher",
    # Dotted path of the object that publishes committed events live (engine.ports.Publisher).
    "PUBLISHER": "agentflow.events.ChannelLayerPublisher",
    # Regular expressions redacted from everything stored or published, besides the
    # patterns of Policy rows. Extend rather than replace: [*DEFAULT_REDACT, r"..."].
    # RE2 syntax (linear time): no lookaround or backreferences; check E006 says why.
    "REDACT": list(DEFAULT_REDACT),
    # When True, a tool runs only if an enabled Policy allows it.
    "DENY_BY_DEFAULT": False,
    # Model providers by alias, configured like CACHES: {"default": {"BACKEND":
    # "agentflow.llm.OpenAIProvider", "MODEL": "gpt-4.1-mini", "OPTIONS": {...}}}.
    # ctx.llm(model="fast") picks the alias "fast"; without model, "default".
    "LLM": {},
    # Model prices in US dollars per million tokens: {"gpt-x": {"input": "2.50",
    # "output": "10.00"}}. Budgets count the cost of model calls with it.
    "PRICES": {},
    # Dotted path of ``rule(user, approval) -> bool``, asked after the permission
    # agentflow.decide_approval before anyone decides an approval.
    "APPROVAL_RULE": "agentflow.permissions.staff_may_decide",
    # Dotted path of ``rule(user, run) -> bool``, asked after the permission
    # agentflow.view_run before anyone sees a run's events (websockets, run pages).
    "RUN_VIEW_RULE": "agentflow.permissions.staff_may_view",
}


@cache
def get() -> dict[str, Any]:
    """Return the merged settings dict."""
    user = getattr(settings, "AGENTFLOW", {}) or {}
    unknown = set(user) - set(DEFAULTS)
    if unknown:
        from django.core.exceptions import ImproperlyConfigured

        hints = "".join(
            f" Did you mean {close[0]!r} for {name!r}?"
            for name in sorted(unknown)
            if (close := difflib.get_close_matches(name, list(DEFAULTS), n=1))
        )
        raise ImproperlyConfigured(
            f"Unknown AGENTFLOW setting(s): {', '.join(sorted(unknown))}.{hints} "
            f"Known keys: {', '.join(sorted(DEFAULTS))}."
        )
    return {**DEFAULTS, **user}


def setting(name: str) -> Any:
    """Return one agentflow setting."""
    return get()[name]


Clear = TypeVar("Clear", bound=Callable[[], object])
_reloaders: list[Callable[[], object]] = []


def on_reload(clear: Clear) -> Clear:
    """Call ``clear()`` whenever ``AGENTFLOW`` changes; usable as a decorator."""
    if clear not in _reloaders:
        _reloaders.append(clear)
    return clear


def reload(**kwargs: Any) -> None:
    """Drop the caches when ``AGENTFLOW`` changes (connected to ``setting_changed``)."""
    if kwargs.get("setting") == "AGENTFLOW":
        get.cache_clear()
        for clear in _reloaders:
            clear()
