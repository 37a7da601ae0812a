"""``@tool(atomic=True)``: the tool's writes and its step record commit together.

Each test SIGKILLs a real worker after the tool wrote its row and before the commit. The
tools note each body start in a file (``bodies.log``), which a rollback cannot undo, so a
test can tell "the body ran twice" from "the row was written twice".
"""

from __future__ import annotations

from pathlib import Path

import pytest

import agentflow
from agentflow import tool
from agentflow.models import Run, Step
from tests.faults import FAULT, MARK
from tests.support import wait_until
from tests.testapp.models import LedgerEntry

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    folder = tmp_path / "marks"
    folder.mkdir()
    return folder


def bodies(marks: Path) -> list[str]:
    log = marks / "bodies.log"
    return log.read_text().split() if log.exists() else []


def kill_after_the_write(workers, marks: Path, *, atomic: bool) -> Run:
    """Start ``tests.pay_once`` on a worker, SIGKILL it inside the tool, finish on a second one."""
    env = {"AGENTFLOW_TEST_MARKS": str(marks)}
    (marks / "inv-1.hold").touch()
    doomed = workers("doomed", concurrency=1, env=env)
    run = agentflow.start("tests.pay_once", {"invoice": "inv-1", "atomic": atomic})
    wait_until(
        (marks / "inv-1.written").exists, timeout=60, what="the tool to write its ledger row"
    )
    doomed.kill()
    workers("survivor", concurrency=1, env=env)
    return agentflow.wait(run, timeout=60)


def test_a_worker_killed_inside_an_atomic_tool_leaves_no_write_and_the_retry_writes_once(
    workers, marks
):
    run = kill_after_the_write(workers, marks, atomic=True)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert bodies(marks) == ["inv-1", "inv-1"]  # the body ran twice ...
    assert LedgerEntry.objects.filter(invoice="inv-1").count() == 1  # ... its write landed once
    step = Step.objects.get(run=run, position=0)
    assert (step.status, step.attempts, step.output) == (Step.Status.SUCCEEDED, 2, "inv-1")


def test_a_worker_killed_between_an_atomic_tools_body_and_its_record_leaves_no_write(
    workers, marks
):
    """The crash window after the body returned, while its record is written: the body's
    writes must still be uncommitted there (a record written after the tool's own
    transaction committed would leave a write behind and the retry would write again)."""
    plain = {"AGENTFLOW_TEST_MARKS": str(marks)}
    doomed = workers(
        "doomed", concurrency=1, env={**plain, FAULT: "before_record", MARK: str(marks / "x")}
    )
    run = agentflow.start("tests.pay_once", {"invoice": "inv-7", "atomic": True})
    wait_until(lambda: not doomed.alive(), timeout=60, what="the worker to die at the record")
    assert bodies(marks) == ["inv-7"]
    assert not LedgerEntry.objects.filter(invoice="inv-7").exists()  # rolled back with it
    workers("survivor", concurrency=1, env=plain)
    run = agentflow.wait(run, timeout=60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert bodies(marks) == ["inv-7", "inv-7"]
    assert LedgerEntry.objects.filter(invoice="inv-7").count() == 1


def test_the_same_tool_without_atomic_and_without_a_key_writes_twice(workers, marks):
    """The difference atomic=True makes: a plain tool is at-least-once."""
    run = kill_after_the_write(workers, marks, atomic=False)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert bodies(marks) == ["inv-1", "inv-1"]
    assert LedgerEntry.objects.filter(invoice="inv-1").count() == 2


def test_a_fan_out_of_200_atomic_children_with_two_kills_writes_exactly_200_rows(workers, marks):
    env = {"AGENTFLOW_TEST_MARKS": str(marks)}
    worker = workers("first", concurrency=2, env=env)
    run = agentflow.start("tests.pay_many", {"n": 200, "hold_seconds": 0.1})
    for name, rows in (("second", 40), ("third", 110)):
        wait_until(
            lambda rows=rows: LedgerEntry.objects.count() >= rows,
            timeout=120,
            what=f"{rows} children to commit",
        )
        worker.kill()  # two children are almost always inside their transaction here
        worker = workers(name, concurrency=2, env=env)
    run = agentflow.wait(run, timeout=240)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == 200
    started = bodies(marks)
    assert len(started) > 200, "no kill landed inside a child: the test proved nothing"
    assert LedgerEntry.objects.count() == 200
    assert LedgerEntry.objects.values("invoice").distinct().count() == 200


def test_a_failed_attempt_of_an_atomic_tool_rolls_its_writes_back(recording_dispatcher):
    """Driven in-process: the first attempt writes and raises, the second writes and returns."""
    from agentflow._engine import executor

    attempts: list[int] = []

    @tool(name="tests.atomic_flaky", atomic=True, retries=1, retry_backoff=0.01)
    def atomic_flaky(invoice: str) -> int:
        LedgerEntry.objects.create(invoice=invoice)
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("the payment API hung up")
        return LedgerEntry.objects.filter(invoice=invoice).count()

    @agentflow.agent(name="tests.atomic_flaky_agent")
    def flaky_agent(ctx, invoice: str) -> int:
        return ctx.call(atomic_flaky, invoice=invoice)

    run = agentflow.start("tests.atomic_flaky_agent", {"invoice": "inv-9"})
    assert executor.advance(run.id, worker="test") == "waiting"  # the retry's backoff
    assert LedgerEntry.objects.filter(invoice="inv-9").count() == 0  # rolled back
    wait_until(
        lambda: executor.advance(run.id, worker="test") == "succeeded",
        timeout=10,
        what="the retry to run",
    )
    run.refresh_from_db()
    assert run.output == 1  # the second attempt saw only its own row
    assert LedgerEntry.objects.filter(invoice="inv-9").count() == 1


def test_atomic_with_a_timeout_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="atomic=True cannot be combined with timeout"):

        @tool(name="tests.atomic_timeout", atomic=True, timeout=5)
        def atomic_timeout() -> None: ...
