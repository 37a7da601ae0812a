"""System checks of how the site is served and run: its web process, static files and broker.

Each catches a setup that runs without an error and leaves the console broken: a
``runserver`` without websockets, a production site that serves no CSS or scripts, runs
sent to a broker nobody configured, a SQLite file shared by worker processes.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import Warning, register

STATIC_MIDDLEWARE = (
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
)
NOSTATIC = "whitenoise.runserver_nostatic"


@register("agentflow")
def check_runserver(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """In development ``manage.py runserver`` must be daphne's, which serves websockets."""
    from django.apps import apps
    from django.conf import settings

    owner = _runserver_owner()
    if not settings.DEBUG or owner in (None, "daphne"):
        return []
    why = "it is not installed"
    if apps.is_installed("daphne"):
        if owner == "django.contrib.staticfiles":
            return []  # daphne's own check says so: daphne.E001
        why = f"it is listed after {owner}, whose runserver wins"
    return [
        Warning(
            f"DEBUG is on and `manage.py runserver` comes from {owner}, not daphne ({why}): "
            "it serves no websockets, so the console's pages get 404 on their sockets and say "
            "'reconnecting…' forever.",
            hint='Put "daphne" first in INSTALLED_APPS (INSTALLED_APPS = ["daphne", '
            "*INSTALLED_APPS]): its runserver serves the pages, the static files and the "
            'websockets. If you never use runserver, add "agentflow.W012" to '
            "SILENCED_SYSTEM_CHECKS.",
            id="agentflow.W012",
        )
    ]


def _runserver_owner() -> str | None:
    """The app whose ``runserver`` serves, as ``manage.py`` picks it (first listed wins)."""
    import os

    from django.apps import apps
    from django.core.management import find_commands, get_commands

    owner = get_commands().get("runserver")
    if owner != NOSTATIC:
        return owner
    # WhiteNoise's runserver_nostatic runs the runserver of the next app that has one.
    configs = list(apps.get_app_configs())
    names = [config.name for config in configs]
    for config in configs[names.index(NOSTATIC) + 1 :]:
        if "runserver" in find_commands(os.path.join(config.path, "management")):
            return config.name
    return "django.core"


@register("agentflow")
def check_static_files(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """With DEBUG off, something in the web process must serve the collected static files."""
    from django.conf import settings

    return [] if settings.DEBUG else _static_problems()


@register("agentflow", deploy=True)
def check_static_files_deployed(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``check --deploy`` asks it of a site whose DEBUG is still on, too."""
    from django.conf import settings

    return _static_problems() if settings.DEBUG else []  # else check_static_files reports


def _static_problems() -> list[Any]:
    from django.conf import settings

    url = str(getattr(settings, "STATIC_URL", None) or "")
    if url.startswith(("http://", "https://", "//")):  # a CDN or another host serves them
        return []
    problems: list[Any] = []
    if not _serves_static(list(getattr(settings, "MIDDLEWARE", None) or [])):
        problems.append(
            Warning(
                "No middleware in MIDDLEWARE serves static files, and an ASGI server (daphne, "
                "uvicorn) serves none of its own: in production the admin is unstyled, the "
                "console's scripts never load and Approve lands on a raw JSON page.",
                hint='Add "whitenoise.middleware.WhiteNoiseMiddleware" to MIDDLEWARE right '
                "after SecurityMiddleware, and run `manage.py collectstatic --noinput` at each "
                "deploy. If your proxy serves STATIC_ROOT at STATIC_URL instead, add "
                '"agentflow.W013" to SILENCED_SYSTEM_CHECKS.',
                id="agentflow.W013",
            )
        )
    if not getattr(settings, "STATIC_ROOT", None) and _collects_to_disk():
        problems.append(
            Warning(
                "STATIC_ROOT is not set, so `manage.py collectstatic` has nowhere to put the "
                "static files and, in production, nothing serves the admin's and the "
                "console's CSS and scripts.",
                hint='Set STATIC_ROOT = BASE_DIR / "staticfiles" and run `manage.py '
                "collectstatic --noinput` at each deploy.",
                id="agentflow.W014",
            )
        )
    return problems


def _serves_static(middleware: list[str]) -> bool:
    """Whether a middleware is WhiteNoise's (or ServeStatic's), or a subclass of it."""
    from django.utils.module_loading import import_string

    for path in middleware:
        if path in STATIC_MIDDLEWARE:
            return True
        try:
            found = import_string(path)
        except Exception:  # Django reports a broken MIDDLEWARE entry when it loads it
            continue
        bases = getattr(found, "__mro__", ())
        if any(f"{base.__module__}.{base.__qualname__}" in STATIC_MIDDLEWARE for base in bases):
            return True
    return False


def _collects_to_disk() -> bool:
    """Whether collectstatic writes to STATIC_ROOT (the default storage), not a cloud bucket."""
    from django.apps import apps
    from django.core.files.storage import FileSystemStorage, storages
    from django.utils.module_loading import import_string

    if not apps.is_installed("django.contrib.staticfiles"):
        return False
    try:
        backend = import_string(storages.backends["staticfiles"]["BACKEND"])
    except Exception:
        return False
    return isinstance(backend, type) and issubclass(backend, FileSystemStorage)


@register("agentflow")
def check_broker_configured(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """A site with no broker at all sends its runs to Celery's default, amqp://localhost.

    A broker configured in settings that the current app does not use is W010's case.
    """
    from celery import current_app
    from django.conf import settings

    if getattr(settings, "CELERY_BROKER_URL", None):
        return []
    try:
        if current_app.conf.broker_url:  # CELERY_BROKER_URL in the environment counts too
            return []
    except Exception:  # an app that cannot even configure itself
        return []
    return [
        Warning(
            "No Celery broker is configured (no CELERY_BROKER_URL in Django's settings, and "
            "Celery's current app has no broker_url): runs are sent to Celery's default, "
            "amqp://localhost, and wait there, unless a RabbitMQ happens to run on this "
            "machine.",
            hint='Set CELERY_BROKER_URL = "redis://..." in settings.py, and load the '
            "Celery app in <project>/__init__.py (see the README).",
            id="agentflow.W015",
        )
    ]


@register("agentflow")
def check_database_for_workers(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Worker processes share the database: SQLite serves only the embedded, one-process worker."""
    from django.conf import settings

    engine = str((getattr(settings, "DATABASES", None) or {}).get("default", {}).get("ENGINE", ""))
    if not any(name in engine for name in ("sqlite", "spatialite")) or workers_in_this_process():
        return []
    return [
        Warning(
            "The default database is SQLite and Celery's broker is not the in-process "
            "memory://, so workers run in other processes: agentflow does not support a "
            "SQLite file shared by processes (concurrent workers fail with 'database is "
            "locked'). It is tested on PostgreSQL.",
            hint='Use PostgreSQL (ENGINE "django.db.backends.postgresql"); keep SQLite only '
            'with CELERY_BROKER_URL = "memory://", where agentflow.embedded.worker() runs '
            "the worker inside the web process, as `make demo` does.",
            id="agentflow.W016",
        )
    ]


def workers_in_this_process() -> bool:
    """Whether the broker is the in-memory transport: the only worker is embedded here."""
    from agentflow.embedded import is_embedded

    try:
        return is_embedded()
    except Exception:  # an app that cannot even configure itself: assume other processes
        return False
