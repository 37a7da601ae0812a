"""Redaction: a planted secret is never stored or published; tools still get it."""

from __future__ import annotations

import json

import pytest
from django.apps import apps
from django.db import connection

import agentflow
from agentflow.events import ALL_RUNS_GROUP
from agentflow.gates import redaction, sealing
from agentflow.models import Event, Run, Step
from tests.support import GroupListener, wait_until
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "sk-live-4f9a8b7c6d5e4f3a2b1c"


def full_scan() -> dict[str, int]:
    """How often SECRET appears in each agentflow table, read with raw SQL."""
    found = {}
    for model in apps.get_app_config("agentflow").get_models():
        table = model._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT * FROM {table}")
            text = json.dumps(cursor.fetchall(), default=str)
        found[table] = text.count(SECRET)
    return found


def test_a_planted_secret_is_found_nowhere_in_the_tables_or_the_channel_layer(workers):
    listener = GroupListener(ALL_RUNS_GROUP)
    workers("w1")
    run = agentflow.wait(agentflow.start("tests.leaky_agent", {"token": SECRET}), timeout=60)
    assert run.status == Run.Status.SUCCEEDED, run.error

    # The tool got the real key, inline and as a fan-out child, and the agent the real output.
    assert Execution.objects.filter(key="leaky:real").count() == 3
    assert not Execution.objects.filter(key="leaky:redacted").exists()
    assert run.output["same"] is True
    assert Step.objects.filter(run=run, sealed_output__isnull=False).exists()
    assert Step.objects.filter(run=run, sealed_args__isnull=False).count() == 1
    assert "[redacted]" in json.dumps(run.output) and "[redacted]" in json.dumps(run.input)
    failed = Step.objects.get(run=run, kind="call", position=3)
    assert "upstream refused key [redacted]" in failed.error["message"]
    assert SECRET not in failed.error["traceback"]
    note = Event.objects.get(run=run, type="note")
    assert note.data["data"] == {"token": "[redacted]", "owner": "[redacted]"}
    assert agentflow.replay(run).ok

    assert full_scan() == dict.fromkeys(full_scan(), 0)

    seqs = set(Event.objects.filter(run=run).values_list("seq", flat=True))

    def mine() -> list[dict]:
        return [
            e
            for m in listener.received
            for r in m["runs"]
            if r["run"] == str(run.id)
            for e in r["events"]
        ]

    def published_all() -> bool:
        listener.drain()
        return {e["seq"] for e in mine()} >= seqs

    wait_until(published_all, timeout=30, what="every event on the channel layer")
    assert {m["type"] for m in listener.received} == {"agentflow.batch"}
    assert SECRET not in json.dumps(mine())
    assert any(e["event"] == "note" for e in mine())


def test_policy_patterns_add_to_the_settings_list(settings):
    from agentflow.models import Policy

    assert redaction.redact({"k": "mail ann@example.org", "x": 1}) == {
        "k": "mail [redacted]",
        "x": 1,
    }
    assert redaction.redact_text("Authorization: Bearer abc.def-123456") == (
        "Authorization: [redacted]"
    )
    Policy.objects.create(name="acme ids", redact=r"ACME-\d{6}")
    assert redaction.redact(["ACME-123456", {"ACME-654321": "ok"}]) == [
        "[redacted]",
        {"[redacted]": "ok"},
    ]
    settings.AGENTFLOW = {**settings.AGENTFLOW, "REDACT": []}
    assert redaction.redact("ann@example.org ACME-123456") == "ann@example.org [redacted]"


def test_sealed_values_open_after_a_key_rotation_with_a_fallback(settings):
    token = sealing.seal('{"a": 1}')
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "new-key-" * 8, [settings.SECRET_KEY]
    assert sealing.unseal(token) == '{"a": 1}'
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(agentflow.AgentflowError, match="SECRET_KEY_FALLBACKS"):
        sealing.unseal(token)
