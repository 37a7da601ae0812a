"""agentflow on a database of its own: a router the check accepts, and one it refuses.

The end-to-end test runs tests/two_databases.py (real workers, a run of each kind, the
console, the reconciler) in a pytest session of its own under tests.settings_two_databases,
whose test databases are named after this session's, so two suites can run side by side.
"""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings
from django.test import override_settings

from agentflow._checks import check_database_routing
from tests.conftest import ROOT


class OnlyAgentflowElsewhere:
    """agentflow on "agentflow", and the user model and beat's tables left on "default"."""

    def db_for_write(self, model: type, **hints: object) -> str | None:
        return "agentflow" if model._meta.app_label == "agentflow" else None

    db_for_read = db_for_write


def test_a_router_that_parts_agentflow_from_the_user_model_is_refused():
    assert check_database_routing() == []
    with override_settings(DATABASE_ROUTERS=[OnlyAgentflowElsewhere()]):
        errors = check_database_routing()
    assert {error.id for error in errors} == {"agentflow.E007"}
    found = "\n".join(error.msg for error in errors)
    assert "Run.owner" in found and "auth.User on 'default'" in found
    assert "django_celery_beat.PeriodicTask" in found and "auth.Group" in found
    assert "docs/deploying.md" in errors[0].hint


def test_runs_the_console_and_the_reconciler_on_a_database_of_agentflows_own():
    environment = {
        **os.environ,
        "AGENTFLOW_TEST_DB": f"{settings.TEST_DATABASE}_two",
        "REDIS_URL": settings.REDIS_URL,
    }
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "tests/two_databases.py",
            "--ds=tests.settings_two_databases", "--create-db", "-p", "no:cacheprovider",
            "-q", "--tb=short",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "3 passed" in result.stdout.splitlines()[-1], result.stdout[-3000:]
