"""agentflow's own statements are prepared on PostgreSQL, unless the site says not to."""

from __future__ import annotations

import pytest
from django.db import connection

import agentflow
from agentflow._engine import executor
from agentflow._engine.state import sql
from agentflow.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


def prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_a_run_prepares_its_statements_once_and_reuses_them(recording_dispatcher):
    connection.close()  # a fresh connection: nothing prepared on it yet
    for _ in range(3):
        run = agentflow.start("tests.three_steps")
        assert executor.advance(run.id, worker="t") == "succeeded"
        assert Run.objects.get(id=run.id).output == 6
    statements = prepared()
    steps = [s for s in statements if "INSERT INTO" in s and "agentflow_step" in s]
    assert len(steps) == 1  # three runs of three steps: one prepared step insert
    assert any("lease_token = r.lease_token + 1" in s for s in statements)  # the lease
    assert len(statements) == len(set(statements))


@pytest.mark.parametrize(
    "change",
    [
        {"AGENTFLOW": {"PREPARE_STATEMENTS": False}},
        {"DISABLE_SERVER_SIDE_CURSORS": True},
        {"OPTIONS": {"prepare_threshold": None}},
    ],
)
def test_a_site_can_turn_preparing_off(settings, change):
    assert sql.prepares(connection)
    if "AGENTFLOW" in change:
        settings.AGENTFLOW = {**settings.AGENTFLOW, **change["AGENTFLOW"]}
        assert not sql.prepares(connection)
        return
    saved = dict(connection.settings_dict)
    try:
        connection.settings_dict.update(change)
        assert not sql.prepares(connection)
    finally:
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def test_nothing_is_prepared_when_it_is_off(settings, recording_dispatcher):
    settings.AGENTFLOW = {**settings.AGENTFLOW, "PREPARE_STATEMENTS": False}
    connection.close()
    run = agentflow.start("tests.three_steps")
    assert executor.advance(run.id, worker="t") == "succeeded"
    assert prepared() == []
