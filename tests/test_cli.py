"""`manage.py agentflow` subcommands."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

import agentflow
from agentflow.models import Run
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.django_db(transaction=True)


def run_command(*args: str) -> str:
    out = StringIO()
    call_command("agentflow", *args, stdout=out)
    return out.getvalue()


def run_command_exiting(code: int, *args: str) -> str:
    """Run a command that must stop with exit code ``code``; return what it printed."""
    out = StringIO()
    with pytest.raises(CommandError) as stopped:
        call_command("agentflow", *args, stdout=out)
    assert stopped.value.returncode == code, stopped.value
    return out.getvalue()


def manage_py(*args: str) -> subprocess.Popen:
    """``manage.py agentflow ...`` as a shell runs it, on the test database."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "AGENTFLOW_TEST_WORKER": "1"}
    return subprocess.Popen(
        [sys.executable, "manage.py", "agentflow", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def exit_status(process: subprocess.Popen) -> tuple[int, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out + err


def test_list_agents_shows_versions_inputs_and_tools():
    out = run_command("list-agents")
    assert "billing.reconcile  version 2  input: period, settle_seconds" in out
    assert "tests.mixed  version 1  input: n" in out
    assert "billing.pay  retries=3 timeout=30" in out


def test_start_wait_follows_events_on_a_real_worker_and_status_shows_the_run(workers):
    workers("w1", concurrency=1)
    out = run_command("start", "tests.mixed", "--input", '{"n": 3}', "--wait", "--timeout", "60")
    assert "step.completed" in out
    assert "run.succeeded" in out
    assert '"squares": 1' in out
    run = Run.objects.get()
    status = run_command("status", str(run.id))
    assert f"run {run.id}" in status
    assert "status  succeeded" in status
    assert "#2 call tests.record_effect (succeeded)" in status
    assert "replay of run" in run_command("replay", str(run.id))


def test_start_with_an_idempotency_key_returns_the_same_run():
    first = run_command("start", "tests.mixed", "--input", '{"n": 1}', "--idempotency-key", "k1")
    second = run_command("start", "tests.mixed", "--input", '{"n": 1}', "--idempotency-key", "k1")
    assert first.split()[1] == second.split()[1]
    assert Run.objects.count() == 1


def test_recover_reports_what_it_woke(recording_dispatcher):
    from datetime import timedelta

    from django.utils import timezone

    run = Run.objects.create(agent="tests.mixed", agent_version="1", input={"n": 1})
    Run.objects.filter(id=run.id).update(created_at=timezone.now() - timedelta(minutes=5))
    out = run_command("recover")
    assert "looking for runs to recover" in out
    assert "woke 1 run(s): 1 pending" in out
    assert [r for r, _ in recording_dispatcher] == [run.id]


def test_recover_takes_the_fleet_s_lock_and_leaves_the_pass_to_its_holder(recording_dispatcher):
    """As the Celery task does: two passes never run at once across the fleet."""
    from datetime import timedelta

    import psycopg
    from django.db import connection
    from django.utils import timezone

    from agentflow._engine.reconciler import LOCK_KEY

    run = Run.objects.create(agent="tests.mixed", agent_version="1", input={"n": 1})
    Run.objects.filter(id=run.id).update(created_at=timezone.now() - timedelta(minutes=5))
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"], port=settings["PORT"], user=settings["USER"],
        dbname=settings["NAME"], autocommit=True,
    ) as holder:  # fmt: skip
        holder.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        out = run_command("recover")
    assert "another process is reconciling right now" in out
    assert recording_dispatcher == []  # nothing was woken by this pass
    assert "woke 1 run(s)" in run_command("recover")  # the lock went with its holder


def test_replay_command_fails_on_mismatch(workers, monkeypatch):
    from django.core.management import CommandError

    from tests.testapp import agents as test_agents

    workers("w1", concurrency=1)
    run = agentflow.start("tests.variant", {})
    agentflow.signal(run, "continue")
    assert agentflow.wait(run).status == Run.Status.SUCCEEDED
    monkeypatch.setattr(test_agents, "VARIANT", "b")
    with pytest.raises(CommandError, match="replay found mismatches"):
        run_command("replay", str(run.id))


def test_start_wait_stops_at_an_approval_and_approve_and_reject_decide_it(workers):
    from django.contrib.auth import get_user_model
    from django.core.management.base import CommandError

    from agentflow.models import Approval

    users = get_user_model()
    users.objects.create_superuser("boss", "boss@example.com", "pw")
    users.objects.create_user("intern", "intern@example.com", "pw")
    workers("w1", concurrency=1)
    out = run_command_exiting(
        5, "start", "tests.payer", "--input", '{"invoice": "A-1", "amount": 5}', "--wait",
        "--timeout", "60",
    )  # fmt: skip
    approval = Approval.objects.get()
    assert f"waiting for approval {approval.id}: " in out
    assert f"/admin/agentflow/approval/{approval.id}/change/" in out

    with pytest.raises(CommandError, match="intern may not decide approval"):
        run_command("approve", str(approval.id), "--as", "intern")
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        run_command("approve", str(approval.id), "--as", "nobody")
    out = run_command("approve", str(approval.id), "--as", "boss", "--comment", "ok")
    assert f"approval {approval.id} approved by boss" in out
    run = agentflow.wait(approval.run_id, 60)
    assert run.status == Run.Status.SUCCEEDED and run.output == {"paid": 5}
    with pytest.raises(CommandError, match="already"):
        run_command("reject", str(approval.id), "--as", "boss")

    run_command("start", "tests.payer", "--input", '{"invoice": "B-2", "amount": 7}')
    second = agentflow.wait(Run.objects.latest("created_at"), 60)
    pending = second.approvals.get()
    out = run_command("reject", str(pending.id), "--as", "boss", "--comment", "not this one")
    assert f"approval {pending.id} rejected by boss" in out
    second = agentflow.wait(second, 60)
    assert "was rejected by boss" in second.output["refused"]


def test_start_wait_exits_with_a_code_for_each_outcome(workers):
    """Scripts branch on the exit code: 0 succeeded, 3 failed, 4 cancelled, 5 needs a
    person, 6 still going when --timeout ran out (agentflow.management._exit_codes)."""
    workers("w1", concurrency=2)
    started = {
        "succeeded": manage_py("start", "tests.mixed", "--input", '{"n": 2}', "--wait"),
        "failed": manage_py("start", "tests.doomed", "--wait"),
        "approval": manage_py(
            "start", "tests.payer", "--input", '{"invoice": "C-3", "amount": 4}', "--wait"
        ),
        "timeout": manage_py(
            "start", "tests.waiter", "--idempotency-key", "slow", "--wait", "--timeout", "2"
        ),
        "cancelled": manage_py("start", "tests.waiter", "--idempotency-key", "stop", "--wait"),
    }
    to_cancel = wait_until(
        lambda: Run.objects.filter(idempotency_key="stop", status=Run.Status.WAITING).first(),
        timeout=60,
        what="the run to cancel to wait for its signal",
    )
    agentflow.cancel(to_cancel)
    codes = {name: exit_status(process) for name, process in started.items()}
    assert {name: code for name, (code, _) in codes.items()} == {
        "succeeded": 0,
        "failed": 3,
        "approval": 5,
        "timeout": 6,
        "cancelled": 4,
    }, codes
    assert "RuntimeError: the agent gave up" in codes["failed"][1]
    assert "failed (exit code 3)" in codes["failed"][1]
    assert "waits for a person" in codes["approval"][1]
    assert "after 2s" in codes["timeout"][1]


def test_start_wait_exits_5_for_a_run_the_loop_guard_paused(workers):
    """A paused run needs a person too (raise the limit, resume): exit code 5, like an
    approval, not 0 and not the timeout's 6."""
    from agentflow.models import Policy

    Policy.objects.create(name="guard", agent="tests.runaway", max_steps=3)
    workers("w1", concurrency=1)
    out = run_command_exiting(5, "start", "tests.runaway", "--wait", "--timeout", "60")
    run = Run.objects.get(agent="tests.runaway")
    assert run.status == Run.Status.PAUSED, run.status
    assert "allows at most 3 steps per run (loop guard)" in run.wait_reason
    assert f"run {run.id} ({run.agent} version {run.agent_version})" in out
