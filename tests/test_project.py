"""Guards on the project itself: layering, migrations, the public API and system checks."""

from __future__ import annotations

import ast
import json
import re
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
LAYERS = ("agentflow.conf", "agentflow.models", "agentflow._guardrails", "agentflow._engine")
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


def test_every_wake_up_waits_for_agentflows_commit():
    """``transaction.on_commit`` without ``using`` waits for the default database: on a site
    whose router puts agentflow elsewhere it would send at once, before the rows commit.
    Only ``_engine/state/sql.py`` calls it, with agentflow's alias."""
    bare = sorted(
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path != PACKAGE / "_engine" / "state" / "sql.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "transaction.on_commit(" in line
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


# What a site may import or name in its settings, and where it is told to. Everything else
# is internal and its name starts with "_", as in DBOS and Temporal's SDK.
PUBLIC_MODULES = {
    "agentflow": "the API: agentflow/__init__.py",
    "agentflow.beat": "beat_schedule, in the site's celery.py (README)",
    "agentflow.conf": "DEFAULT_REDACT, in settings (docs/approvals-budgets-policies.md)",
    "agentflow.embedded": "the in-process worker of the embedded default (docs/reference.md)",
    "agentflow.events": "ChannelLayerPublisher, the PUBLISHER setting's default (README)",
    "agentflow.exceptions": "the one error hierarchy (docs/api.md)",
    "agentflow.llm": "the providers AGENTFLOW['LLM'] names (README)",
    "agentflow.models": "the models (API.md)",
    "agentflow.permissions": "staff_may_view and staff_may_decide, the rules' defaults (README)",
    "agentflow.routing": "websocket_urlpatterns, in the site's asgi.py (README)",
    "agentflow.schedules": "runs_of and sync_queues (docs/scheduling.md)",
    "agentflow.tasks": "priorities and stamp_fire_time, in the site's celery.py (README)",
    "agentflow.urls": "include('agentflow.urls') (README)",
}
# Names Django and Celery look up by convention; their insides are Django's shapes.
CONVENTIONS = {"agentflow.admin", "agentflow.apps", "agentflow.management",
               "agentflow.migrations", "agentflow.templatetags"}  # fmt: skip
LLM_NAMES = {"AnthropicProvider", "LLMResult", "OpenAIProvider", "Provider", "Reply", "Request",
             "ScriptedProvider", "TokenUsage", "ToolCall", "ToolSpec"}  # fmt: skip


DOCS = PACKAGE.parent / "docs"


def _module_names() -> set[str]:
    names = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_public_surface_is_exactly_what_the_docs_name():
    """A module whose name has no "_" is one a site may rely on: each is listed here with
    where a site is told to use it, and every other one is marked internal."""
    public = {
        name
        for name in _module_names()
        if not any(part.startswith("_") for part in name.split(".")[1:])
        and not any(name == c or name.startswith(c + ".") for c in CONVENTIONS)
    }
    models = {name for name in public if name.startswith("agentflow.models.")}
    assert public - models == set(PUBLIC_MODULES), sorted((public - models) ^ set(PUBLIC_MODULES))
    docs = "\n".join(p.read_text() for p in [PACKAGE.parent / "README.md", *DOCS.glob("*.md")])
    for name, where in PUBLIC_MODULES.items():
        assert name in docs or name == "agentflow", f"{name} ({where}) is named in no doc"
    import agentflow.llm
    import agentflow.routing

    assert set(agentflow.llm.__all__) == LLM_NAMES
    assert all(getattr(agentflow.llm, name) for name in LLM_NAMES)
    assert agentflow.routing.__all__ == ["websocket_urlpatterns"]
    assert agentflow.routing.websocket_urlpatterns


def test_every_error_derives_from_the_root():
    for name in API_NAMES:
        value = getattr(agentflow, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, agentflow.AgentflowError), name


def test_system_checks_refuse_bad_settings(settings):
    from agentflow._checks import check_settings

    assert check_settings() == []
    settings.AGENTFLOW = {"LEASE_SECONDS": -1}
    assert [m.id for m in check_settings()] == ["agentflow.E002"]
    settings.AGENTFLOW = {"LEASE_SECONDS": 2, "RECONCILE_EVERY": 10}
    assert [m.id for m in check_settings()] == ["agentflow.W001"]
    settings.AGENTFLOW = {"LEASE_SECOND": 2}
    (error,) = check_settings()
    assert error.id == "agentflow.E001" and "LEASE_SECOND" in error.msg


def test_a_database_result_backend_is_flagged_for_chords(settings):
    from agentflow._checks import check_result_backend

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
    from agentflow._checks import check_prefetch

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
    from agentflow._checks import check_celery

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
    from agentflow._checks import check_celery
    from agentflow._guardrails.stores import MemoryLimitStore, limit_store

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

    from agentflow._checks import check_celery_app

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
    from agentflow._checks import check_settings

    settings.AGENTFLOW = {"LEASE_SECOND": 2}
    (error,) = check_settings()
    assert error.id == "agentflow.E001"
    assert "Did you mean 'LEASE_SECONDS' for 'LEASE_SECOND'?" in error.msg


def test_live_events_without_a_shared_channel_layer_are_flagged(settings):
    from agentflow._checks import check_channel_layer, check_channel_layer_deployed

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
    from agentflow._checks import check_visibility_timeout

    assert check_visibility_timeout() == []  # an hour: longer than any test tool's timeout
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 1}
    (warning,) = check_visibility_timeout()
    assert warning.id == "agentflow.W008" and "(1s) is shorter than" in warning.msg
    settings.CELERY_BROKER_URL = "amqp://guest@127.0.0.1:5672//"  # RabbitMQ has none
    assert check_visibility_timeout() == []


def test_an_asgi_application_without_agentflow_websockets_is_flagged(settings):
    from agentflow._checks import check_websocket_routes

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
    files = sorted((PACKAGE / "_engine").rglob("*.py")) + sorted(
        (PACKAGE / "_guardrails").rglob("*.py")
    )
    found = sorted(
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in files
        for module in imported_modules(path)
        if module.split(".")[0] in transports
    )
    assert files and not found, found


# Run state has one owner: agentflow/_engine/state/ writes the Run, Step and Event rows and
# opens the transactions that change them. Everything else calls its named transitions.
STATE = PACKAGE / "_engine" / "state"
OWNED_MODELS = {"Run", "Step", "Event"}
WRITES = {"update", "create", "bulk_create", "bulk_update", "delete", "get_or_create",
          "update_or_create", "select_for_update", "save"}  # fmt: skip
RAW_WRITE = re.compile(
    r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\{(RUN|STEP|EVENT)\}|\"?agentflow_(run|step|event)\b)"
)
# Transactions that join a state transition to rows of another kind, each named with why it
# is one transaction. A new one belongs in engine/state/ unless it too must commit the
# site's or another table's rows with the run's.
COMPOSED_TRANSACTIONS = {
    "agentflow/_engine/attempts.py": "an atomic tool's own writes commit with its step record",
    "agentflow/_engine/ops/tools.py": "an inline atomic tool's writes commit with its record",
    "agentflow/_engine/ops/signals.py": "a Signal is consumed with the step that returns it",
    "agentflow/_engine/ops/approval.py": "an Approval is created with the step that waits on it",
    "agentflow/_engine/decisions.py": "a decision commits with the run or child it releases",
    "agentflow/_engine/fan_out_record.py": "rate slots are booked as the children are recorded",
    "agentflow/schedules.py": "django-celery-beat's rows, not run state",
}


def _owned_writes(path: Path) -> list[str]:
    """ORM writes on Run/Step/Event querysets, and raw INSERT/UPDATE/DELETE on their tables."""
    text = path.read_text()
    found = [f"raw SQL: {m[0]}" for m in RAW_WRITE.finditer(text)]
    for node in ast.walk(ast.parse(text)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in WRITES:
            continue
        receiver = node.func.value
        while isinstance(receiver, ast.Call | ast.Attribute):
            if (
                isinstance(receiver, ast.Attribute)
                and receiver.attr == "objects"
                and isinstance(receiver.value, ast.Name)
                and receiver.value.id in OWNED_MODELS
            ):
                found.append(
                    f"line {node.lineno}: {receiver.value.id}.objects...{node.func.attr}()"
                )
                break
            receiver = receiver.func if isinstance(receiver, ast.Call) else receiver.value
    return found


def _outside_state() -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if STATE not in path.parents and "migrations" not in path.parts
    ]


def test_only_the_state_package_writes_runs_steps_and_events():
    """A transition written elsewhere is one the state machine does not know about."""
    found = {
        str(path.relative_to(PACKAGE.parent)): writes
        for path in _outside_state()
        if (writes := _owned_writes(path))
    }
    # Budget.save marks its run as having a budget of its own: the admin saves budgets
    # through the model, and the models layer cannot call the engine.
    assert found == {
        "agentflow/models/budgets.py": [found.get("agentflow/models/budgets.py", [""])[0]]
    }
    assert "has_own_budget" in (PACKAGE / "models" / "budgets.py").read_text()
    for owner in ("run_rows.py", "run_actions.py", "child_rows.py"):
        assert _owned_writes(STATE / owner), owner  # the scan sees the writes where they are


def test_transactions_on_run_state_are_opened_by_the_state_package():
    opened = sorted(
        str(path.relative_to(PACKAGE.parent))
        for path in _outside_state()
        if re.search(r"\b(sql\.atomic|transaction\.atomic)\(", path.read_text())
    )
    composed = set(COMPOSED_TRANSACTIONS) | {"agentflow/_guardrails/budgets.py"}  # spend rows only
    assert set(opened) <= composed, sorted(set(opened) - composed)
    assert set(COMPOSED_TRANSACTIONS) <= set(opened), "stale entries"


# Wall-clock readers: ``module.attribute`` pairs, and names imported from those modules.
WALL_CLOCKS = {
    ("timezone", "now"), ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"),
    ("date", "today"), ("time", "time"), ("time", "time_ns"), ("timezone", "localtime"),
}  # fmt: skip
# Wall-clock reads that are neither stored nor compared with stored times, and why.
LOCAL_WALL_CLOCKS = {
    # The in-memory limit store of the embedded default: one process compares only its own
    # readings, and none leaves the process.
    ("agentflow/_guardrails/stores.py", "time.time"): 5,
}


def _wall_clock_reads(tree: ast.Module) -> list[str]:
    """``module.attribute`` of each wall-clock read, called or passed on, and each import."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in WALL_CLOCKS:
                found.append(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module.rsplit(".", 1)[-1]
            found += [
                f"{module}.{alias.name}"
                for alias in node.names
                if (module, alias.name) in WALL_CLOCKS
            ]
    return found


def test_the_engine_and_gates_read_the_time_from_the_databases_clock():
    """Leases, timers, deadlines and recorded times come from ``agentflow.models.clock``.

    A worker whose clock is 2 h fast or 1 h slow stamps wrong times with its own clock
    (issue 20). ``time.monotonic()`` (durations inside one process) is always allowed.
    """
    files = sorted((PACKAGE / "_engine").rglob("*.py")) + sorted(
        (PACKAGE / "_guardrails").rglob("*.py")
    )
    reads: dict[tuple[str, str], int] = {}
    for path in files:
        for read in _wall_clock_reads(ast.parse(path.read_text())):
            key = (str(path.relative_to(PACKAGE.parent)), read)
            reads[key] = reads.get(key, 0) + 1
    assert files
    assert reads == LOCAL_WALL_CLOCKS, sorted(set(reads.items()) - set(LOCAL_WALL_CLOCKS.items()))


def test_the_wall_clock_guard_sees_reads_called_passed_and_imported():
    source = (
        "from django.utils.timezone import now\n"
        "a = timezone.now()\nb = record(timezone.now)\nc = datetime.now(UTC)\nd = time.time()\n"
        "e = time.monotonic()\nf = clock.now()\n"
    )
    assert _wall_clock_reads(ast.parse(source)) == [
        "timezone.now", "timezone.now", "timezone.now", "datetime.now", "time.time",
    ]  # fmt: skip


# Step kinds, event types and status sets are defined once, beside the columns they fill
# (agentflow/models/runs.py); everything else names them.
DEFINITIONS = PACKAGE / "models" / "runs.py"


def _sources() -> list[tuple[str, ast.Module]]:
    """Every agentflow module but the definitions and the migrations, parsed."""
    return [
        (str(path.relative_to(PACKAGE.parent)), ast.parse(path.read_text()))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != DEFINITIONS and "migrations" not in path.parts
    ]


def _docstrings(tree: ast.Module) -> set[int]:
    bodies = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, bodies)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _strings(node: ast.AST | None) -> list[ast.Constant]:
    """The string constants ``node`` is or holds (a tuple, list or set of them)."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [
        item for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)
    ]


def _names_a_kind(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "kind") or (
        isinstance(node, ast.Name) and node.id == "kind"
    )


def _kind_arguments(sources: list[tuple[str, ast.Module]]) -> dict[str, int]:
    """agentflow's functions that take a step kind: name to the kind's positional index."""
    found = {}
    for _, tree in sources:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [arg.arg for arg in (*node.args.posonlyargs, *node.args.args)]
                names = names[1:] if names[:1] in (["self"], ["cls"]) else names
                if "kind" in names:
                    found[node.name] = names.index("kind")
    return found


def _kind_sites(tree: ast.Module, takes_kind: dict[str, int]) -> list[ast.Constant]:
    """String constants where a step kind goes: compared with a ``kind``, passed as one,
    stored under a "kind" key, or listed in a ``*KIND*`` constant."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_names_a_kind(side) for side in sides):
                found += [string for side in sides for string in _strings(side)]
        elif isinstance(node, ast.keyword) and node.arg in ("kind", "kind__in"):
            found += _strings(node.value)
        elif isinstance(node, ast.Dict):
            found += [
                string
                for key, value in zip(node.keys, node.values, strict=True)
                if isinstance(key, ast.Constant) and key.value == "kind"
                for string in _strings(value)
            ]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in takes_kind and len(node.args) > takes_kind[name]:
                found += _strings(node.args[takes_kind[name]])
        elif isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and "KIND" in target.id for target in node.targets
        ):
            found += _strings(node.value)
    return found


def test_event_types_are_named_not_spelled():
    """An event type is ``Event.Type.X``: a spelled-out "run.started" is a second definition."""
    from agentflow.models import Event

    types = {str(type_) for type_ in Event.Type}
    spelled = sorted(
        f"{path}:{node.lineno} {node.value!r}"
        for path, tree in _sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and node.value in types
        and id(node) not in _docstrings(tree)
    )
    assert not spelled, f"use Event.Type instead of: {spelled}"


def test_step_kinds_are_named_not_spelled():
    """A step kind is ``Step.Kind.X`` wherever code records, compares or passes one."""
    from agentflow.models import Step

    kinds = {str(kind) for kind in Step.Kind}
    sources = _sources()
    takes_kind = _kind_arguments(sources)
    assert {"take", "rebuild_exception", "recorded_value"} <= set(takes_kind)
    spelled = sorted(
        f"{path}:{node.lineno} {node.value!r}"
        for path, tree in sources
        for node in _kind_sites(tree, takes_kind)
        if node.value in kinds
    )
    assert not spelled, f"use Step.Kind instead of: {spelled}"


def test_the_open_child_statuses_are_one_set():
    """The open-child partial index, the engine's SQL and the console read one definition."""
    from agentflow._engine.state import sql
    from agentflow.models import Step

    index = next(i for i in Step._meta.indexes if i.name == "agentflow_step_open_child_v2")
    assert dict(index.condition.children)["status__in"] == list(Step.OPEN)
    assert sql.literal(*Step.OPEN) == sql.OPEN_STEP
    assert sql.literal(*Step.CLAIMABLE) == sql.CLAIMABLE_STEP
    assert set(Step.IN_FLIGHT) | {Step.Status.WAITING} == set(Step.OPEN)
    assert set(Step.OPEN) | set(Step.FINISHED) == set(Step.Status)


JS = PACKAGE / "static" / "agentflow"


def test_the_scripts_spell_no_event_or_status_of_their_own():
    """The browser gets frame names and statuses from the server (``af-names``)."""
    from agentflow._consumers import BATCH_FRAME, STATUS_FRAME
    from agentflow.models import Event, Run

    names = {str(name) for name in Event.Type} | {BATCH_FRAME, STATUS_FRAME}
    statuses = {str(status) for status in Run.Status}
    spelled = sorted(
        f"{path.name}: {literal}"
        for path in sorted(JS.glob("*.js"))
        for literal in re.findall(r"\"([^\"\\\n]*)\"|'([^'\\\n]*)'", path.read_text())
        for literal in literal
        if literal in names or literal.startswith(("run.", "step.", "approval.", "llm."))
    )
    # A map keyed by run status ({succeeded: true, ...}) is a copy of Run.TERMINAL or the like.
    keyed = sorted(
        f"{path.name}: {key}:"
        for path in sorted(JS.glob("*.js"))
        for key in re.findall(r"[{,]\s*\"?([a-z]+)\"?\s*:", path.read_text())
        if key in statuses
    )
    assert not spelled and not keyed, spelled + keyed


def test_pages_that_load_the_live_scripts_render_the_names():
    pages = sorted(
        str(path.relative_to(PACKAGE))
        for path in (PACKAGE / "templates").rglob("*.html")
        if "agentflow/socket.js" in path.read_text() or "agentflow/live.js" in path.read_text()
    )
    without = [
        page
        for page in pages
        if "agentflow/console/live_names.html" not in (PACKAGE / page).read_text()
    ]
    assert pages and not without, without


def test_the_names_served_to_the_scripts_are_the_python_ones():
    from django.template.loader import render_to_string

    from agentflow._consumers import BATCH_FRAME, STATUS_FRAME
    from agentflow.models import Event, Run

    html = render_to_string("agentflow/console/live_names.html")
    served = json.loads(re.search(r'<script id="af-names"[^>]*>(.*?)</script>', html)[1])
    assert served == {
        "batch": BATCH_FRAME,
        "status": STATUS_FRAME,
        "delta": Event.Type.LLM_DELTA,
        "approvals": [Event.Type.APPROVAL_REQUESTED, Event.Type.APPROVAL_DECIDED],
        "statusAfter": Event.STATUS_AFTER,
        "terminal": list(Run.TERMINAL),
    }
