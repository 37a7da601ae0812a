"""Guards on the project itself: layering, migrations, the public API and system checks."""

from __future__ import annotations

import ast
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

import agentflow
from tests.support import celery_conf

API_NAMES = {
    "AgentDefinition",
    "AgentflowError",
    "AlreadyDecided",
    "ApprovalNotFound",
    "BudgetExceeded",
    "Decision",
    "InvalidInput",
    "InvalidState",
    "LLMResult",
    "ModelError",
    "ModelRefused",
    "ModelUnavailable",
    "NonDeterminismError",
    "PayloadError",
    "PolicyDenied",
    "ReplayReport",
    "RunComparison",
    "RunContext",
    "RunNotFound",
    "ToolArgumentError",
    "ToolDefinition",
    "TokenUsage",
    "ToolError",
    "UnknownAgent",
    "UnknownModel",
    "UnknownTool",
    "agent",
    "approve",
    "cancel",
    "compare",
    "fork",
    "get_run",
    "reject",
    "replay",
    "resume",
    "schedule",
    "signal",
    "start",
    "tool",
    "wait",
}


# Bottom to top: each layer may import the ones before it, never one after it.
LAYERS = ("agentflow.conf", "agentflow.models", "agentflow.gates", "agentflow.engine")
PACKAGE = Path(agentflow.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, function-local imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_a_layer_imports_nothing_above_it(layer):
    name = layer.removeprefix("agentflow.")
    files = [PACKAGE / f"{name}.py"] if (PACKAGE / f"{name}.py").exists() else []
    files += sorted((PACKAGE / name).rglob("*.py"))
    above = LAYERS[LAYERS.index(layer) + 1 :]
    upward = sorted(
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in files
        for module in imported_modules(path)
        if any(module == high or module.startswith(f"{high}.") for high in above)
    )
    assert files
    assert not upward, upward


def test_model_modules_never_import_their_own_package():
    """``agentflow.models`` imports every model module: one that imports the package back
    (``from agentflow.models import x``) at module level makes an import cycle."""
    cycles = sorted(
        str(path.relative_to(PACKAGE.parent))
        for path in (PACKAGE / "models").glob("*.py")
        if path.name != "__init__.py"
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.ImportFrom) and node.module == "agentflow.models"
    )
    assert not cycles, cycles


def test_every_transaction_is_on_agentflows_database():
    """A bare ``transaction.atomic()`` is the default database's, not the one a site's
    routers give agentflow's tables: it would not enclose agentflow's writes."""
    bare = sorted(
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "transaction.atomic()" in line
    )
    assert not bare, bare


@pytest.mark.django_db
def test_models_and_migrations_agree():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_public_names_are_exactly_the_contract():
    assert set(agentflow.__all__) == API_NAMES
    for name in API_NAMES:
        assert getattr(agentflow, name) is not None


def test_every_error_derives_from_the_root():
    for name in API_NAMES:
        value = getattr(agentflow, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, agentflow.AgentflowError), name


def test_system_checks_refuse_bad_settings(settings):
    from agentflow.checks import check_settings

    assert check_settings() == []
    settings.AGENTFLOW = {"LEASE_SECONDS": -1}
    assert [m.id for m in check_settings()] == ["agentflow.E002"]
    settings.AGENTFLOW = {"LEASE_SECONDS": 2, "RECONCILE_EVERY": 10}
    assert [m.id for m in check_settings()] == ["agentflow.W001"]
    settings.AGENTFLOW = {"LEASE_SECOND": 2}
    (error,) = check_settings()
    assert error.id == "agentflow.E001" and "LEASE_SECOND" in error.msg


def test_a_database_result_backend_is_flagged_for_chords(settings):
    from agentflow.checks import check_result_backend

    assert check_result_backend() == []
    settings.CELERY_RESULT_BACKEND = "django-db"
    (warning,) = check_result_backend()
    assert warning.id == "agentflow.W002" and "chord" in warning.msg

    # A site that configures Celery in its celery.py, not in Django's settings.
    del settings.CELERY_RESULT_BACKEND
    with celery_conf(result_backend="db+postgresql://db/results"):
        (warning,) = check_result_backend()
    assert warning.id == "agentflow.W002" and "db+postgresql" in warning.msg
    with celery_conf(result_backend="redis://127.0.0.1:6379/0"):
        assert check_result_backend() == []


def test_a_prefetching_worker_is_flagged_because_control_would_wait_behind_tools(settings):
    from agentflow.checks import check_prefetch

    assert check_prefetch() == []
    del settings.CELERY_WORKER_PREFETCH_MULTIPLIER  # Celery's default, 4
    (warning,) = check_prefetch()
    assert warning.id == "agentflow.W003" and "is 4" in warning.msg

    # A site that configures Celery in its celery.py, not in Django's settings.
    with celery_conf(worker_prefetch_multiplier=1):
        assert check_prefetch() == []
    with celery_conf(worker_prefetch_multiplier=8):
        (warning,) = check_prefetch()
    assert warning.id == "agentflow.W003" and "is 8" in warning.msg


def test_celery_settings_that_break_runs_are_errors_and_per_process_limits_a_warning(settings):
    from agentflow.checks import check_celery

    assert check_celery() == []
    settings.CELERY_RESULT_BACKEND = None
    (error,) = check_celery()
    assert error.id == "agentflow.E004" and "fan-out" in error.msg
    settings.CELERY_RESULT_BACKEND = "redis://127.0.0.1:6379/0"
    settings.CELERY_TASK_ALWAYS_EAGER = True
    (error,) = check_celery()
    assert error.id == "agentflow.E005" and "nothing would ever resume it" in error.msg
    del settings.CELERY_TASK_ALWAYS_EAGER
    settings.CELERY_BROKER_URL = "amqp://guest@127.0.0.1:5672//"
    (warning,) = check_celery()
    assert warning.id == "agentflow.W005" and "per worker process" in warning.msg
    settings.AGENTFLOW = {**settings.AGENTFLOW, "REDIS_URL": "redis://127.0.0.1:6379/3"}
    assert check_celery() == []


def test_a_redis_broker_set_in_celery_py_alone_is_flagged(settings):
    """The limit store reads Django's settings: a broker the Celery app alone names is
    not seen, so limits would stay per process; the check says so."""
    from agentflow.checks import check_celery
    from agentflow.gates.stores import MemoryLimitStore, limit_store

    del settings.CELERY_BROKER_URL
    settings.AGENTFLOW = {**settings.AGENTFLOW, "REDIS_URL": None}
    with celery_conf(broker_url=settings.REDIS_URL):
        (warning,) = check_celery()
        assert isinstance(limit_store(), MemoryLimitStore)
    assert warning.id == "agentflow.W005" and "set in the Celery app alone" in warning.msg
    settings.AGENTFLOW = {**settings.AGENTFLOW, "REDIS_URL": settings.REDIS_URL}
    with celery_conf(broker_url=settings.REDIS_URL):
        assert check_celery() == []


def test_a_celery_app_not_built_from_settings_is_flagged(settings):
    from celery import Celery, current_app

    from agentflow.checks import check_celery_app

    assert check_celery_app() == []  # the test site's celery.py reads CELERY_BROKER_URL
    site_app = current_app._get_current_object()
    Celery("elsewhere", broker="amqp://guest:secret@rabbit.internal:5672//").set_current()
    try:
        (elsewhere,) = check_celery_app()
        Celery("unconfigured").set_current()  # what a project without the import gets
        (unconfigured,) = check_celery_app()
    finally:
        site_app.set_current()
    assert elsewhere.id == "agentflow.W010" and "would never reach your workers" in elsewhere.msg
    assert "rabbit.internal" in elsewhere.msg and "secret" not in elsewhere.msg
    assert "sends to Celery's default, amqp://localhost" in unconfigured.msg


def test_a_misspelled_setting_is_reported_with_the_key_it_probably_means(settings):
    from agentflow.checks import check_settings

    settings.AGENTFLOW = {"LEASE_SECOND": 2}
    (error,) = check_settings()
    assert error.id == "agentflow.E001"
    assert "Did you mean 'LEASE_SECONDS' for 'LEASE_SECOND'?" in error.msg


def test_live_events_without_a_shared_channel_layer_are_flagged(settings):
    from agentflow.checks import check_channel_layer, check_channel_layer_deployed

    assert check_channel_layer() == [] and check_channel_layer_deployed() == []
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # The test site's broker is Redis: its workers are other processes, `check` says so.
    (warning,) = check_channel_layer()
    assert warning.id == "agentflow.W007" and "never reach the web processes" in warning.msg
    assert check_channel_layer_deployed() == []  # reported once
    with celery_conf(broker_url="memory://"):  # the embedded demo: one process
        assert check_channel_layer() == []
        (warning,) = check_channel_layer_deployed()  # but production needs a shared layer
    assert warning.id == "agentflow.W007"
    del settings.CHANNEL_LAYERS
    (warning,) = check_channel_layer()
    assert warning.id == "agentflow.W006" and "no live events" in warning.msg


def test_a_visibility_timeout_shorter_than_a_lease_or_tool_timeout_is_flagged(settings):
    from agentflow.checks import check_visibility_timeout

    assert check_visibility_timeout() == []  # an hour: longer than any test tool's timeout
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 1}
    (warning,) = check_visibility_timeout()
    assert warning.id == "agentflow.W008" and "(1s) is shorter than" in warning.msg
    settings.CELERY_BROKER_URL = "amqp://guest@127.0.0.1:5672//"  # RabbitMQ has none
    assert check_visibility_timeout() == []


def test_an_asgi_application_without_agentflow_websockets_is_flagged(settings):
    from agentflow.checks import check_websocket_routes

    assert check_websocket_routes() == []  # the demo's asgi.py routes them
    settings.ASGI_APPLICATION = "tests.test_project.ROUTES_ONLY_HTTP"
    (warning,) = check_websocket_routes()
    assert warning.id == "agentflow.W009" and "does not route agentflow's websockets" in warning.msg
    settings.ASGI_APPLICATION = "tests.nowhere.application"
    (warning,) = check_websocket_routes()
    assert "cannot be imported" in warning.msg
    del settings.ASGI_APPLICATION
    (warning,) = check_websocket_routes()
    assert "ASGI_APPLICATION is not set" in warning.msg


class _HttpOnly:
    """Shaped like channels' ProtocolTypeRouter, routing no websocket at all."""

    application_mapping = {"http": object()}


ROUTES_ONLY_HTTP = _HttpOnly()


def test_the_engine_and_gates_import_no_transport():
    """Celery and Channels stay behind the ports (``agentflow.tasks``, ``agentflow.events``)."""
    transports = ("celery", "kombu", "channels", "channels_redis")
    files = sorted((PACKAGE / "engine").rglob("*.py")) + sorted((PACKAGE / "gates").rglob("*.py"))
    found = sorted(
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in files
        for module in imported_modules(path)
        if module.split(".")[0] in transports
    )
    assert files and not found, found
