"""The example agents end to end on real workers, against the local model server."""

from __future__ import annotations

import importlib
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.db import connection

import agentflow
from agentflow.models import Approval, BudgetSpend, Run, Step
from apps.billing.models import Payment
from tests.openai_server import OpenAIServer, Reply

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def demo_data():
    """The rows the billing migrations load (transactional tests flush them between tests)."""
    migration = importlib.import_module("apps.billing.migrations.0003_demo_data")
    migration.unload(django_apps, None)  # present when the database was just created
    migration.load(django_apps, None)


def test_billing_reconcile_explains_mismatches_and_waits_for_approval_over_250(workers, demo_data):
    owner = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    with OpenAIServer() as model:
        model.handler = lambda body: Reply("A likely cause, and a fix.", usage=(50, 10))
        workers("w1", env={"AGENTFLOW_TEST_OPENAI_URL": model.base_url})
        run = agentflow.start(
            "billing.reconcile",
            {"period": "2026-10", "settle_seconds": 0.1},
            owner=owner,
            budget={"max_cost": "0.50"},
        )
        run = agentflow.wait(run, 90)
        assert run.status == Run.Status.WAITING, run.error
        (approval,) = run.approvals.filter(status=Approval.Status.PENDING)
        assert approval.request["args"] == {"invoice_id": "INV-2011", "amount": "310.25"}
        # What is owed under the threshold is paid already; the 310.25 waits for a person.
        assert list(Payment.objects.values_list("invoice_id", flat=True)) == ["INV-2004"]

        agentflow.approve(approval, by=owner, comment="checked the contract")
        run = agentflow.wait(run, 60)
        assert run.status == Run.Status.SUCCEEDED, run.error
        assert len(model.requests) == 5  # one explanation per mismatch
    assert run.output["mismatches"] == {
        "INV-2004": "unpaid",
        "INV-2011": "unpaid",
        "INV-2017": "short-paid",
        "INV-2023": "paid twice",
        "INV-2028": "unpaid",
    }
    assert run.output["to_refund"] == ["INV-2023"]
    assert sorted(Payment.objects.values_list("invoice_id", "amount")) == [
        ("INV-2004", Decimal("80.50")),
        ("INV-2011", Decimal("310.25")),
        ("INV-2017", Decimal("45.00")),
        ("INV-2028", Decimal("42.00")),
    ]
    assert run.output["explanations"]["INV-2017"] == {
        "model": "gpt-test",
        "text": "A likely cause, and a fix.",
    }
    # The match ran as a fan-out of 30, and the budget was charged what the server reported.
    assert Step.objects.filter(run=run, kind="map").count() == 1
    assert Step.objects.filter(run=run, index__isnull=False).count() == 30
    per_call = (Decimal(50) * 2 + Decimal(10) * 8) / 1_000_000
    assert BudgetSpend.objects.get(budget__run=run).cost == 5 * per_call
    assert agentflow.replay(run).ok


def test_research_brief_searches_reads_in_parallel_and_cites_what_it_read(workers):
    from apps.research.scripted import brief as scripted_brief
    from tests.openai_server import ToolCall

    def answer(body: dict) -> Reply:
        # The demo's scripted model, served over HTTP: the real client, the real loop.
        response = scripted_brief(body["messages"], [t["function"]["name"] for t in body["tools"]])
        calls = [
            ToolCall(call["name"].replace(".", "__"), call["arguments"])
            for call in response.get("tool_calls", [])
        ]
        return Reply(response.get("text", ""), tool_calls=calls, usage=(200, 40))

    migration = importlib.import_module("apps.research.migrations.0002_corpus")
    editor = SimpleNamespace(connection=connection)  # all the migration asks of its editor
    migration.unload(django_apps, editor)
    migration.load(django_apps, editor)
    with OpenAIServer() as model:
        model.handler = answer
        workers("w1", env={"AGENTFLOW_TEST_OPENAI_URL": model.base_url})
        run = agentflow.start("research.brief", {"topic": "prepared statements and poolers"})
        run = agentflow.wait(run, 90)
    assert run.status == Run.Status.SUCCEEDED, run.error
    parents = Step.objects.filter(run=run, index__isnull=True).order_by("position")
    assert [s.kind for s in parents] == ["llm", "call", "llm", "parallel", "llm"]
    search = parents[1]
    hits = [hit["id"] for hit in search.output]
    assert len(hits) == 5
    read = Step.objects.filter(run=run, position=3, index__isnull=False).order_by("index")
    assert [child.output["id"] for child in read] == hits[:3]
    # PostgreSQL's ranking put notes about the query's words first.
    assert all("prepared" in c.output["body"] or "pooler" in c.output["body"] for c in read)
    assert run.output["cited"] == sorted(hits[:3])
    assert run.output["brief"].startswith("Brief: prepared statements and poolers\n\n- ")
    assert agentflow.replay(run).ok
