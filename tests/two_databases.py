"""agentflow on a database of its own, on real workers (tests.settings_two_databases).

Not collected by the suite on its own: tests/test_two_databases.py runs this file in a
pytest session of its own under the variant settings, with test databases of their own.
Every transaction and every on_commit wake-up must be on agentflow's alias: one on the
default database would raise TransactionManagementError, or send a wake-up before its
rows commit, or write a row to the wrong database.
"""

from __future__ import annotations

import json

import pytest
import redis
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connections
from django.test import Client
from django.urls import reverse

import agentflow
from agentflow._engine import reconciler
from agentflow.models import Approval, Event, Run, Signal, Step
from agentflow.models.database import alias
from tests import two_databases_probe
from tests.conftest import Worker
from tests.support import wait_until
from tests.testapp.models import Execution, Flag

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

# A worker whose own reconciler does not run during the test.
NO_RECONCILER = {"AGENTFLOW_TEST_RECONCILE_EVERY": "3600"}


@pytest.fixture(autouse=True)
def nothing_sent_early():
    """No wake-up leaves this process, or a worker, before its rows commit."""
    two_databases_probe.early.clear()
    yield
    assert two_databases_probe.early == []


def sent_nothing_early(*workers: Worker) -> None:
    for worker in workers:
        assert two_databases_probe.EARLY not in worker.log(), worker.log()[-4000:]


def approvals_of(run: Run, count: int = 1) -> list[Approval]:
    """The run's approvals, once it has asked for ``count`` of them."""

    def asked() -> list[Approval] | None:
        found = list(Approval.objects.filter(run=run).order_by("id"))
        return found if len(found) >= count else None

    return wait_until(asked, timeout=30, what=f"{count} approval(s) of run {run.id}")


def tables(database: str) -> set[str]:
    return set(connections[database].introspection.table_names())


def rows(database: str, table: str) -> int:
    with connections[database].cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {connections[database].ops.quote_name(table)}")
        return cursor.fetchone()[0]


def test_the_router_puts_agentflow_on_its_own_database():
    assert alias() == "agentflow"
    assert {"agentflow_run", "agentflow_step", "auth_user"} <= tables("agentflow")
    # The default database holds the site's own apps and none of agentflow's tables.
    assert not {name for name in tables("default") if name.startswith(("agentflow_", "auth_"))}
    assert "testapp_execution" in tables("default")
    call_command("check", fail_level="WARNING")  # agentflow.E007 agrees with the router


def test_runs_fan_outs_approvals_signals_retry_fork_and_the_console(workers):
    worker = workers("w1", concurrency=2)
    boss = User.objects.create_superuser("boss", "boss@example.com", "pw")

    # The engine and a fan-out (ctx.map): a chord of children, then a join.
    fan = agentflow.wait(agentflow.start("tests.fan", {"n": 4}), timeout=60)
    assert fan.status == Run.Status.SUCCEEDED, fan.error
    assert fan.output == {"doubled": [0, 2, 4, 6], "after": 16}
    assert Step.objects.filter(run=fan, index__isnull=False).count() == 4

    # An approval decided through the public API, another through the console's view.
    paying = agentflow.start("tests.payer", {"invoice": "a", "amount": 5})
    (approval,) = approvals_of(paying)
    agentflow.approve(approval, by=boss)
    paid = agentflow.wait(paying, timeout=60)
    assert paid.status == Run.Status.SUCCEEDED and paid.output == {"paid": 5}, paid.error
    assert Approval.objects.get(id=approval.id).decided_by == boss

    client = Client()
    client.force_login(boss)
    asking = agentflow.start("tests.payer", {"invoice": "b", "amount": 7})
    (approval,) = approvals_of(asking)
    page = client.get(reverse("admin:agentflow_run_change", args=[asking.id]))
    assert page.status_code == 200 and str(approval.id) in page.content.decode()
    decided = client.post(reverse("agentflow:decide", args=[approval.id]), {"decision": "reject"})
    assert decided.status_code == 200, decided.content
    refused = agentflow.wait(asking, timeout=60)
    assert refused.status == Run.Status.SUCCEEDED and "refused" in refused.output, refused.error

    # A fan-out whose children each wait for a person: deciding one releases it.
    titled = agentflow.start("tests.titled_fan", {"n": 2})
    for child in approvals_of(titled, 2):
        agentflow.approve(child, by=boss)
    mapped = agentflow.wait(titled, timeout=60)
    assert mapped.status == Run.Status.SUCCEEDED, mapped.error
    assert [slot["paid"] for slot in mapped.output] == ["0.50", "1.50"]

    # A signal.
    waiting = agentflow.start("tests.waiter", {})
    wait_until(
        lambda: Run.objects.get(id=waiting.id).status == Run.Status.WAITING,
        timeout=30,
        what="the run to wait for its signal",
    )
    agentflow.signal(waiting, "go", {"n": 1})
    signalled = agentflow.wait(waiting, timeout=60)
    assert signalled.output == {"got": {"n": 1}}, signalled.error

    # Retry of a failed run (after the operator fixed the cause), then a fork of it.
    failed = agentflow.wait(agentflow.start("tests.browser_retry", {"flag": "fix"}), timeout=60)
    assert failed.status == Run.Status.FAILED
    Flag.objects.create(name="fix")
    agentflow.resume(failed, by=boss)
    retried = agentflow.wait(failed, timeout=60)
    assert retried.status == Run.Status.SUCCEEDED and retried.output == "fixed", retried.error
    fork = agentflow.fork(failed, at=1, by=boss)
    assert agentflow.wait(fork, timeout=60).status == Run.Status.SUCCEEDED
    assert fork.parent_id == failed.id
    assert client.get(reverse("admin:agentflow_run_change", args=[fork.id])).status_code == 200

    # Every row is on agentflow's database; the tools' own rows are on the site's.
    runs = {fan.id, paying.id, asking.id, titled.id, waiting.id, failed.id, fork.id}
    assert set(Run.objects.using("agentflow").values_list("id", flat=True)) == runs
    assert rows("agentflow", "agentflow_event") == Event.objects.count() > 0
    assert Signal.objects.using("agentflow").filter(run=waiting).exists()
    assert rows("default", "testapp_execution") == Execution.objects.count() > 0
    assert "agentflow_run" not in tables("default")
    sent_nothing_early(worker)


def test_the_reconciler_wakes_a_run_whose_start_was_lost(workers, redis_client):
    run = agentflow.start("tests.fan", {"n": 2})  # no worker is running yet
    redis_client.flushdb()  # its start message is lost

    def woken() -> dict[str, int] | None:
        return reconciler.reconcile_exclusively() or None  # None until the run is quiet

    found = wait_until(woken, timeout=30, what="the reconciler to find the lost run")
    assert found == {Run.Status.PENDING: 1}, found
    assert sent(redis_client, "agentflow.advance", run.id)  # once its pass committed
    worker = workers("w1", concurrency=2, env=NO_RECONCILER)
    done = agentflow.wait(run, timeout=60)
    assert done.status == Run.Status.SUCCEEDED and done.output["doubled"] == [0, 2], done.error
    assert Run.objects.using("agentflow").filter(id=run.id).exists()
    sent_nothing_early(worker)


def sent(client: redis.Redis, task: str, run_id: object) -> bool:
    """Whether a message of ``task`` for the run waits in one of the broker's queues."""
    for key in client.scan_iter():
        if client.type(key) == b"list":
            for message in client.lrange(key, 0, -1):
                headers = json.loads(message).get("headers", {})
                if headers.get("task") == task and str(run_id) in headers.get("argsrepr", ""):
                    return True
    return False
