"""The database round trips of a run's fixed path, counted on PostgreSQL.

start, taking the lease, parking and finishing are one statement each, and the hot path
opens no savepoint; a run that waits again reads only the tail of its history.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import agentflow
from agentflow._engine import executor
from agentflow._engine.history import histories
from agentflow._engine.state import step_rows
from agentflow.models import Run, Step

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cached_policies(settings, recording_dispatcher):
    """Policies and shared budgets cached, as by default (the test settings read them fresh)."""
    settings.AGENTFLOW = {**settings.AGENTFLOW, "POLICY_CACHE_SECONDS": 3600}
    warm = agentflow.start("tests.three_steps")  # fills the caches
    executor.advance(warm.id, worker="test")


def statements(queries: CaptureQueriesContext) -> list[str]:
    return [query["sql"] for query in queries.captured_queries]


def test_a_three_step_run_costs_six_statements_and_no_savepoint(cached_policies):
    with CaptureQueriesContext(connection) as started:
        run = agentflow.start("tests.three_steps")
    assert len(statements(started)) == 1, statements(started)
    with CaptureQueriesContext(connection) as advanced:
        assert executor.advance(run.id, worker="test") == "succeeded"
    sent = statements(advanced)
    # lease, three steps, finish: no history to read for a run that starts now, and no
    # budget query for a run without a budget.
    assert len(sent) == 5, "\n".join(sent)
    assert not [s for s in sent + statements(started) if "SAVEPOINT" in s.upper()]
    run.refresh_from_db()
    assert (run.status, run.output) == (Run.Status.SUCCEEDED, 6)
    events = list(run.events.order_by("seq").values_list("seq", "type"))
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
    assert [t for _, t in events][:2] == ["run.created", "run.started"]
    assert events[-1][1] == "run.succeeded"


def test_parking_is_one_statement_and_the_next_advance_reads_only_the_tail(cached_policies):
    run = agentflow.start("tests.naps", {"rounds": 30})
    results, counts = [], []
    for _ in range(40):
        with CaptureQueriesContext(connection) as advanced:
            results.append(executor.advance(run.id, worker="test"))
        counts.append(len(statements(advanced)))
        # Every timer due at once (the test does not wait for them).
        Step.objects.filter(run=run, kind="sleep").update(
            wake_at=Run.objects.get(id=run.id).created_at
        )
        if results[-1] == "succeeded":
            break
    assert results[-1] == "succeeded" and results.count("waiting") == 31
    # Each resume: lease, the history's tail, the due timer, the next timer, park. The
    # same at round 29 as at round 2: nothing grows with the history.
    assert counts[2:30] == [5] * 28, counts
    run.refresh_from_db()
    # The agent changed the list it got back before its last sleep; the replay after that
    # sleep still saw the recorded value, as a fresh read from the database would.
    assert run.output == ["recorded"]


def test_the_history_cache_reads_whole_when_another_holder_came_between(recording_dispatcher):
    run = agentflow.start("tests.naps", {"rounds": 3})
    assert executor.advance(run.id, worker="test") == "waiting"
    token = Run.objects.get(id=run.id).lease_token
    recorded = step_rows.load_history(run.id)
    assert len(recorded) == 2  # the list step, and the first sleep (waiting)
    histories.keep(run.id, token, recorded)
    with CaptureQueriesContext(connection) as tail:
        loaded = histories.load(run.id, token + 1)
    assert '"position" > 0' in statements(tail)[-1]  # only after the kept prefix
    assert loaded.keys() == recorded.keys()
    histories.keep(run.id, token, recorded)
    with CaptureQueriesContext(connection) as whole:
        histories.load(run.id, token + 2)  # somebody else held it meanwhile
    assert '"position" >' not in statements(whole)[-1]
