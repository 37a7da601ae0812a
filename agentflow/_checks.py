"""System checks: settings that would make runs slow, stuck or unsafe."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Warning, register

from agentflow import conf
from agentflow._site_checks import workers_in_this_process

POSITIVE = (
    "LEASE_SECONDS",
    "RECONCILE_EVERY",
    "MAX_PAYLOAD_BYTES",
    "VERSION_RETRY_SECONDS",
    "FAN_OUT_TASK_SECONDS",
)


@register("agentflow")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Numbers must be positive, and the reconciler must run well within a lease."""
    messages: list[Any] = []
    try:
        values = conf.get()
    except Exception as exc:
        return [Error(str(exc), id="agentflow.E001")]
    for key in POSITIVE:
        value = values[key]
        if not isinstance(value, int | float) or value <= 0:
            messages.append(
                Error(
                    f"AGENTFLOW['{key}'] must be a positive number, not {value!r}.",
                    id="agentflow.E002",
                )
            )
    if not messages and values["RECONCILE_EVERY"] > values["LEASE_SECONDS"]:
        messages.append(
            Warning(
                "AGENTFLOW['RECONCILE_EVERY'] is longer than LEASE_SECONDS, so runs of a dead "
                "worker wait longer than a lease to be recovered.",
                hint="Reconcile at least once per lease, e.g. RECONCILE_EVERY = LEASE_SECONDS / 3.",
                id="agentflow.W001",
            )
        )
    return messages


@register("agentflow")
def check_redact(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Redaction patterns must be RE2's: runs store nothing while one cannot compile."""
    from agentflow.models import patterns

    try:
        lines = conf.setting("REDACT")
    except Exception:  # an unreadable AGENTFLOW is reported by check_settings (E001)
        return []
    if not isinstance(lines, list | tuple):
        return [
            Error(
                f"AGENTFLOW['REDACT'] must be a list of patterns, not {type(lines).__name__}.",
                hint="Extend the defaults: [*agentflow.conf.DEFAULT_REDACT, r'...'].",
                id="agentflow.E006",
            )
        ]
    return [
        Error(
            f"AGENTFLOW['REDACT'] line {number}: {why}. While a pattern cannot be used, "
            "workers store and publish nothing: every run waits, retried like a database "
            "outage."
            if patterns.unusable(line)
            else f"AGENTFLOW['REDACT'] line {number}: {why}.",
            hint="Redaction patterns are matched with RE2, in time linear in the text "
            "(https://github.com/google/re2/wiki/Syntax); rewrite the pattern or remove it.",
            id="agentflow.E006",
        )
        for number, line in enumerate(lines, 1)
        if (why := patterns.problem(line)) is not None
    ]


@register("agentflow")
def check_result_backend(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Fan-outs are chords: a database result backend makes Celery poll for each one."""
    backend = str(_celery_setting("result_backend", "CELERY_RESULT_BACKEND") or "")
    if backend.startswith(("django-db", "db+")):
        return [
            Warning(
                f"CELERY_RESULT_BACKEND is {backend!r}: Celery then completes chords by polling "
                "(chord_unlock), so every fan-out joins late and loads the database.",
                hint="Use Redis for results: CELERY_RESULT_BACKEND = 'redis://...'. agentflow "
                "keeps no state there; its joins are decided in your database.",
                id="agentflow.W002",
            )
        ]
    return []


@register("agentflow")
def check_prefetch(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Control messages go first only among messages a worker has not reserved yet."""
    multiplier = _celery_setting("worker_prefetch_multiplier", "CELERY_WORKER_PREFETCH_MULTIPLIER")
    if multiplier is None:  # Celery's default
        multiplier = 4
    if multiplier != 1:
        return [
            Warning(
                f"CELERY_WORKER_PREFETCH_MULTIPLIER is {multiplier!r}: each worker process "
                "reserves that many messages ahead, and a run that must resume (after a worker "
                "died, say) waits behind the slow tool calls its worker already reserved.",
                hint="Set CELERY_WORKER_PREFETCH_MULTIPLIER = 1, so agentflow's control "
                "messages, sent with a higher priority, are taken before queued tool work.",
                id="agentflow.W003",
            )
        ]
    return []


@register("agentflow")
def check_models(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Every model alias names an importable provider class, with known keys only."""
    from agentflow.llm import _providers as providers

    try:
        found = providers.problems()
    except Exception:  # an unreadable AGENTFLOW is reported by check_settings (E001)
        return []
    return [
        Error(
            problem,
            hint="Each alias is {'BACKEND': 'agentflow.llm.OpenAIProvider', 'MODEL': '...', "
            "'OPTIONS': {...}}; see the README's model section.",
            id="agentflow.E003",
        )
        for problem in found
    ]


@register("agentflow")
def check_default_model(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``ctx.llm()`` without ``model=`` asks the alias "default"."""
    try:
        entries = conf.setting("LLM")
    except Exception:  # reported by check_settings (E001)
        return []
    if isinstance(entries, dict) and entries and "default" not in entries:
        return [
            Warning(
                f"AGENTFLOW['LLM'] has no 'default' alias (it has {', '.join(sorted(entries))}), "
                "so ctx.llm() and ctx.llm_loop() without model= fail with UnknownModel.",
                hint="Name one of the aliases 'default', or pass model= in every call.",
                id="agentflow.W004",
            )
        ]
    return []


def _celery_setting(name: str, django_name: str) -> Any:
    """A Celery setting as Django's settings spell it, else as the current app has it.

    Sites configure Celery from Django's ``CELERY_*`` names, or in their ``celery.py``.
    """
    from celery import current_app
    from django.conf import settings

    if hasattr(settings, django_name):
        return getattr(settings, django_name)
    try:
        return current_app.conf.get(name)
    except Exception:  # an app that cannot even configure itself
        return None


@register("agentflow")
def check_celery(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Celery settings under which runs would fail or stall: no result backend, eager mode."""
    messages: list[Any] = []
    try:
        backend = _celery_setting("result_backend", "CELERY_RESULT_BACKEND")
        eager = _celery_setting("task_always_eager", "CELERY_TASK_ALWAYS_EAGER")
        broker = str(_celery_setting("broker_url", "CELERY_BROKER_URL") or "")
        redis_url = conf.setting("REDIS_URL")
    except Exception:  # a check must never crash `manage.py check`
        return []
    if not backend or str(backend) == "disabled":
        messages.append(
            Error(
                "Celery has no result backend, so every fan-out (ctx.map, ctx.parallel) fails "
                "in the worker: Celery chords need one.",
                hint="Set CELERY_RESULT_BACKEND = 'redis://...' (agentflow keeps no state "
                "there; its joins are decided in your database).",
                id="agentflow.E004",
            )
        )
    if eager:
        messages.append(
            Error(
                "CELERY_TASK_ALWAYS_EAGER is on: agentflow.start() would run a run in-process "
                "up to its first timer or wait, and nothing would ever resume it.",
                hint="Turn eager mode off and run a worker; for tests, "
                "agentflow.embedded.worker() runs a real one in-process.",
                id="agentflow.E005",
            )
        )
    scheme = broker.partition("://")[0].lower()
    if broker and not scheme.startswith(("redis", "rediss", "memory")) and not redis_url:
        messages.append(
            Warning(
                f"The broker is {scheme}:// and AGENTFLOW['REDIS_URL'] is not set, so rate "
                "limits and concurrency caps are counted per worker process, not fleet-wide.",
                hint="Set AGENTFLOW['REDIS_URL'] = 'redis://...' (your result backend's Redis "
                "will do).",
                id="agentflow.W005",
            )
        )
    elif scheme.startswith("redis") and not redis_url and not _django_names_broker():
        messages.append(
            Warning(
                "The Redis broker is set in the Celery app alone (no CELERY_BROKER_URL in "
                "Django's settings) and AGENTFLOW['REDIS_URL'] is not set, so rate limits, "
                "concurrency caps and the workers' census stay inside each worker process.",
                hint="Set CELERY_BROKER_URL in settings.py, or AGENTFLOW['REDIS_URL'].",
                id="agentflow.W005",
            )
        )
    return messages


def _django_names_broker() -> bool:
    from django.conf import settings

    return bool(getattr(settings, "CELERY_BROKER_URL", None))


@register("agentflow")
def check_celery_app(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Runs are sent through Celery's current app: it must be the one built from settings.

    A project whose ``__init__.py`` does not import its ``celery.py`` sends from web
    processes and ``manage.py`` through Celery's default app, to amqp://localhost.
    """
    from celery import current_app
    from django.conf import settings
    from kombu.utils.url import maybe_sanitize_url

    configured = getattr(settings, "CELERY_BROKER_URL", None)
    try:
        actual = current_app.conf.broker_url
    except Exception:  # an app that cannot even configure itself
        return []
    if not configured or actual == configured:
        return []
    sends_to = maybe_sanitize_url(actual) if actual else "Celery's default, amqp://localhost"
    return [
        Warning(
            f"Celery's current app ({current_app.main or 'the default app'}) sends to "
            f"{sends_to}, not to CELERY_BROKER_URL ({maybe_sanitize_url(configured)}): runs "
            "started from this process would never reach your workers.",
            hint="Load your Celery app when Django starts: put `from .celery import app as "
            "celery_app` in <project>/__init__.py (see the README), and configure it with "
            "app.config_from_object('django.conf:settings', namespace='CELERY').",
            id="agentflow.W010",
        )
    ]


@register("agentflow")
def check_channel_layer(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Live events need a channel layer that web processes and workers share."""
    from django.conf import settings

    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    backend = str((layers.get("default") or {}).get("BACKEND", ""))
    if not backend:
        return [
            Warning(
                "CHANNEL_LAYERS has no 'default' layer, so run pages and websockets get no live "
                "events (they still read the history).",
                hint="Set CHANNEL_LAYERS = {'default': {'BACKEND': "
                "'channels_redis.core.RedisChannelLayer', 'CONFIG': {'hosts': ['redis://...']}}}.",
                id="agentflow.W006",
            )
        ]
    if backend.endswith("InMemoryChannelLayer") and not workers_in_this_process():
        return [_in_memory_layer()]
    return []


@register("agentflow", deploy=True)
def check_channel_layer_deployed(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """In production the layer must cross processes (``check --deploy``), even embedded."""
    from django.conf import settings

    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    backend = str((layers.get("default") or {}).get("BACKEND", ""))
    if backend.endswith("InMemoryChannelLayer") and workers_in_this_process():
        return [_in_memory_layer()]  # otherwise check_channel_layer reports it
    return []


def _in_memory_layer() -> Warning:
    return Warning(
        "The channel layer is InMemoryChannelLayer and workers run in other processes (the "
        "broker is not the in-process memory://): events published by a worker never reach "
        "the web processes' websockets, so the console's pages never update live.",
        hint="Use channels_redis.core.RedisChannelLayer, on the Redis the workers can reach.",
        id="agentflow.W007",
    )


@register("agentflow")
def check_visibility_timeout(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """A Redis broker redelivers a message unacknowledged for longer than its visibility."""
    from agentflow import _registry as registry

    try:
        options = _celery_setting("broker_transport_options", "CELERY_BROKER_TRANSPORT_OPTIONS")
        broker = str(_celery_setting("broker_url", "CELERY_BROKER_URL") or "")
        timeouts = [tool.timeout or 0 for tool in registry.tools()]
        longest = max([conf.setting("LEASE_SECONDS"), *timeouts])
    except Exception:
        return []
    if not broker.startswith(("redis", "rediss", "sentinel")):
        return []
    visibility = float((options or {}).get("visibility_timeout", 3600))
    if visibility >= longest:
        return []
    return [
        Warning(
            f"The broker's visibility_timeout ({visibility:g}s) is shorter than the longest tool "
            f"timeout or lease ({longest:g}s): Redis would hand a call that is still running to "
            "a second worker.",
            hint=f"Set CELERY_BROKER_TRANSPORT_OPTIONS = {{'visibility_timeout': {longest * 2:g}}}"
            " or more.",
            id="agentflow.W008",
        )
    ]


@register("agentflow")
def check_websocket_routes(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """The console's live pages need agentflow's websocket routes in the ASGI application."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    path = getattr(settings, "ASGI_APPLICATION", None)
    hint = (
        "Route agentflow.routing.websocket_urlpatterns in asgi.py (see the README) and set "
        "ASGI_APPLICATION to it."
    )
    if not path:
        return [
            Warning(
                "ASGI_APPLICATION is not set, so the console's run pages and approvals queue "
                "cannot update live (their websockets have no server).",
                hint=hint,
                id="agentflow.W009",
            )
        ]
    try:
        application = import_string(path)
    except Exception as exc:
        return [
            Warning(
                f"ASGI_APPLICATION {path!r} cannot be imported ({type(exc).__name__}: {exc}), "
                "so agentflow cannot tell whether its websockets are routed.",
                hint=hint,
                id="agentflow.W009",
            )
        ]
    if _routes_agentflow(application, depth=0):
        return []
    return [
        Warning(
            f"The ASGI application {path!r} does not route agentflow's websockets "
            "(ws/agentflow/runs/...), so the console's pages cannot update live.",
            hint=hint,
            id="agentflow.W009",
        )
    ]


def _routes_agentflow(app: Any, depth: int) -> bool:
    """Whether agentflow's consumers are reachable through routers and middleware."""
    from agentflow._consumers import RunEventsConsumer

    if depth > 12 or app is None:
        return False
    if getattr(app, "consumer_class", None) is RunEventsConsumer:
        return True
    for route in getattr(app, "routes", None) or []:
        if _routes_agentflow(getattr(route, "callback", None), depth + 1):
            return True
    mapping = getattr(app, "application_mapping", None) or {}
    inner = [getattr(app, name, None) for name in ("application", "inner", "app")]
    return any(_routes_agentflow(child, depth + 1) for child in [*mapping.values(), *inner])


@register("agentflow", "database")
def check_database_routing(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """The models agentflow's foreign keys point at are on agentflow's own database.

    Django keeps no foreign key across databases: ``migrate`` could not create the
    constraint, and a join (a run's owner, a schedule's task) would find no table.
    """
    from django.apps import apps
    from django.db import router

    from agentflow.models.database import alias

    here = alias()
    pointers: dict[Any, list[str]] = {}
    for model in apps.get_app_config("agentflow").get_models():
        if model._meta.proxy:  # a proxy (Schedule) is its concrete model's table
            pointers.setdefault(model._meta.concrete_model, []).append(model.__name__)
            continue
        for field in model._meta.get_fields():
            if field.many_to_one and field.concrete and field.related_model is not model:
                pointers.setdefault(field.related_model, []).append(
                    f"{model.__name__}.{field.name}"
                )
    problems = []
    for target, where in pointers.items():
        there = router.db_for_write(target) or "default"
        if there == here or target._meta.app_label == "agentflow":
            continue
        verb = "points" if len(where) == 1 else "point"
        problems.append(
            Error(
                f"agentflow's tables are on the database {here!r}, but {', '.join(where)} "
                f"{verb} at {target._meta.label} on {there!r}. Django keeps no foreign key "
                "across databases: migrate would fail, and so would the console's joins.",
                hint=f"Route auth, contenttypes, admin and django_celery_beat to {here!r} "
                f"too, or keep agentflow on {there!r}: see 'agentflow on a database of its "
                "own' in docs/deploying.md.",
                id="agentflow.E007",
            )
        )
    return problems
