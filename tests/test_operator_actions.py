"""Operator actions in the console: confirmed cancel, the start form, schedules, resume.

Django's test client on PostgreSQL. Runs execute in-process with a recording dispatcher
where a test needs real steps (a budget pause, a failed step).
"""

from __future__ import annotations

import html
import re
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

import agentflow
from agentflow._console import timing
from agentflow._engine import executor
from agentflow.models import Budget, Event, Run, Schedule
from tests.testapp.models import Flag

pytestmark = pytest.mark.django_db


def staff(username: str, *codenames: str) -> Client:
    """A logged-in client of a staff user who holds only ``codenames``."""
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def text(response) -> str:
    """The page's text with entities decoded, for messages that quote."""
    return html.unescape(response.content.decode())


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def new_run(status: str = Run.Status.WAITING, **fields) -> Run:
    return Run.objects.create(agent="tests.mixed", agent_version="1", status=status, **fields)


def admin_url(name: str, *args) -> str:
    return reverse(f"admin:agentflow_{name}", args=args)


def test_the_new_pages_send_the_csp_and_hold_no_inline_script(admin_client):
    from agentflow._console.csp import POLICY
    from tests.test_console import inline_scripts

    run = new_run()
    task = scheduled()
    pages = [
        admin_client.get(start_url()),
        admin_client.get(start_url(START)),
        admin_client.post(start_url(), {"agent": START}),
        admin_client.post(admin_url("run_cancel", run.id)),
        admin_client.get(admin_url("run_schedule", task.id)),
        admin_client.post(admin_url("run_schedule_delete", task.id)),
    ]
    for response in pages:
        assert response.status_code == 200, response.request
        assert response["Content-Security-Policy"] == POLICY, response.request
        page = response.content.decode()
        assert inline_scripts(page) == [] and " onclick=" not in page, response.request


# -- cancel and reject: confirmed, and styled as destructive ---------------------------


def test_cancel_without_confirm_shows_a_confirmation_page_and_cancels_nothing(admin_client):
    run = new_run()
    url = admin_url("run_cancel", run.id)
    assert admin_client.get(url).status_code == 405  # no GET: a link cannot cancel

    asked = admin_client.post(url)
    assert asked.status_code == 200
    assert Run.objects.get(id=run.id).status == Run.Status.WAITING
    page = asked.content.decode()
    assert 'data-testid="confirm-page"' in page
    form = re.search(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', page, re.S)
    assert form[1] == url
    assert 'name="csrfmiddlewaretoken"' in form[2]
    assert '<input type="hidden" name="confirm" value="yes">' in form[2]
    assert "af-danger" in form[2]
    assert asked["Content-Security-Policy"]
    assert not LogEntry.objects.exists()

    done = admin_client.post(url, {"confirm": "yes"}, follow=True)
    assert Run.objects.get(id=run.id).status == Run.Status.CANCELLED
    assert "Cancelled the run." in messages_of(done)


def test_the_cancel_confirmation_needs_the_cancel_permission():
    run = new_run()
    viewer = staff("viewer", "view_run")
    assert viewer.post(admin_url("run_cancel", run.id)).status_code == 403
    assert viewer.post(admin_url("run_cancel", run.id), {"confirm": "yes"}).status_code == 403
    assert Run.objects.get(id=run.id).status == Run.Status.WAITING


def test_cancel_and_reject_ask_first_and_look_unlike_approve(admin_client, recording_dispatcher):
    run = agentflow.start("tests.asker", {})
    assert executor.advance(run.id, worker="test") == "waiting"
    page = admin_client.get(admin_url("run_change", run.id)).content.decode()
    cancel = re.search(r"<button[^>]*data-testid=\"cancel\"[^>]*>", page)[0]
    reject = re.search(r"<button[^>]*data-testid=\"reject\"[^>]*>", page)[0]
    approve = re.search(r"<button[^>]*data-testid=\"approve\"[^>]*>", page)[0]
    for button in (cancel, reject):
        assert "af-danger" in button and "data-confirm=" in button
    assert "af-danger" not in approve and "data-confirm" not in approve
    assert "agentflow/confirm.js" in page
    queue = admin_client.get(reverse("admin:agentflow_approval_queue")).content.decode()
    assert "agentflow/confirm.js" in queue
    assert re.search(r'<button[^>]*af-danger[^>]*data-testid="reject"[^>]*data-confirm=', queue)


def test_a_rejection_posted_after_the_confirmation_is_recorded(admin_client, recording_dispatcher):
    """confirm.js adds confirm=yes to the decide form; the decide view still rejects."""
    from agentflow.models import Approval

    run = agentflow.start("tests.asker", {})
    assert executor.advance(run.id, worker="test") == "waiting"
    approval = Approval.objects.get(run=run)
    response = admin_client.post(
        reverse("agentflow:decide", args=[approval.id]),
        {"decision": "reject", "comment": "no", "confirm": "yes"},
    )
    assert response.status_code in (200, 302), response.content[:300]
    assert Approval.objects.get(id=approval.id).status == Approval.Status.REJECTED


# -- the start form ------------------------------------------------------------------


START = "tests.start_form"


def start_url(agent: str = "") -> str:
    return admin_url("run_start") + (f"?agent={agent}" if agent else "")


def test_the_start_form_needs_the_start_permission():
    viewer = staff("viewer", "view_run")
    assert viewer.get(start_url(START)).status_code == 403
    refused = viewer.post(start_url(), {"agent": START, "input-period": "x", "input-count": "1"})
    assert refused.status_code == 403
    assert not Run.objects.exists()
    listing = viewer.get(admin_url("run_changelist")).content.decode()
    assert 'data-testid="start-link"' not in listing
    starter = staff("starter", "view_run", "start_run")
    assert starter.get(start_url(START)).status_code == 200
    listing = starter.get(admin_url("run_changelist")).content.decode()
    assert f'href="{start_url()}"' in listing


def test_the_start_form_renders_each_argument_from_the_schema(admin_client):
    choose = admin_client.get(start_url())
    assert f'<option value="{START}">' in choose.content.decode()
    assert choose["Content-Security-Policy"]
    page = admin_client.get(start_url(START)).content.decode()
    assert re.search(r'<input type="text" name="input-period"', page)
    assert re.search(r'<input type="text" inputmode="decimal" name="input-count"', page)
    assert 'name="input-ratio" id="af-start-ratio" value="0.5"' in page
    assert re.search(r'<input type="checkbox" name="input-dry_run"', page)
    assert re.search(r'<select name="input-mode"', page)
    assert '<option value="&quot;fast&quot;" selected>fast</option>' in page
    assert re.search(r'<textarea name="input-tags"', page)
    assert 'name="csrfmiddlewaretoken"' in page


@pytest.mark.parametrize(
    ("posted", "field", "message"),
    [
        ({"input-count": "3"}, "period", "period is required: fill it in."),
        ({"input-period": "2026-01", "input-count": "three"}, "count",
         "count: give a whole number, e.g. 3, not 'three'."),
        ({"input-period": "p", "input-count": "1", "input-ratio": "half"}, "ratio",
         "ratio: give a number, e.g. 2.5, not 'half'."),
        ({"input-period": "p", "input-count": "1", "input-tags": "[a, b]"}, "tags",
         "tags: this is not valid JSON"),
        ({"input-period": "p", "input-count": "1", "input-tags": '{"a": 1}'}, "tags",
         "tags: Input should be a valid list."),
        ({"input-period": "p", "input-count": "1", "input-tags": '["a", 2]'}, "tags",
         "tags.1: Input should be a valid string."),
        ({"input-period": "p", "input-count": "1", "input-mode": '"reckless"'}, "mode",
         "mode: choose one of the listed values."),
    ],
)  # fmt: skip
def test_the_start_form_names_the_field_of_each_problem(admin_client, posted, field, message):
    response = admin_client.post(start_url(), {"agent": START, **posted})
    assert response.status_code == 200
    page = text(response)
    errors = re.search(rf'data-testid="start-error-{field}">(.*?)</ul>', page, re.S)
    assert errors and message in errors[1], page[page.find("start-page") :][:3000]
    assert not Run.objects.exists()


def test_the_start_form_refuses_an_unknown_agent(admin_client):
    response = admin_client.post(start_url(), {"agent": "tests.nobody"})
    assert "There is no agent 'tests.nobody' here" in text(response)
    assert not Run.objects.exists()


def test_the_start_form_starts_a_run_owned_by_the_operator(recording_dispatcher):
    client = staff("starter", "view_run", "start_run")
    response = client.post(
        start_url(),
        {
            "agent": START, "input-period": "2026-01", "input-count": "4",
            "input-ratio": "0.25", "input-dry_run": "on", "input-mode": '"careful"',
            "input-tags": '["a", "b"]',
        },
    )  # fmt: skip
    run = Run.objects.get()
    assert response.status_code == 302
    assert response.url == admin_url("run_change", run.id)
    assert run.input == {
        "period": "2026-01", "count": 4, "ratio": 0.25, "dry_run": True, "mode": "careful",
        "tags": ["a", "b"],
    }  # fmt: skip
    assert run.owner.username == "starter"
    entry = LogEntry.objects.get(object_id=str(run.id))
    assert entry.user.username == "starter" and entry.is_addition()
    # Optional arguments left blank take the agent's defaults.
    client.post(start_url(), {"agent": START, "input-period": "p", "input-count": "1"})
    second = Run.objects.exclude(id=run.id).get()
    assert second.input == {"period": "p", "count": 1, "dry_run": False}
    assert executor.advance(second.id, worker="test") == "succeeded"
    assert Run.objects.get(id=second.id).output["mode"] == "fast"


# -- schedules -------------------------------------------------------------------------


def scheduled(**options) -> PeriodicTask:
    options.setdefault("every", 30)
    return agentflow.schedule("tests.mixed", {"n": 1}, **options)


def test_schedules_are_in_the_admin_index_and_open_the_console(admin_client):
    index = admin_client.get(reverse("admin:index")).content.decode()
    changelist = reverse("admin:agentflow_schedule_changelist")
    assert f'href="{changelist}"' in index and ">Schedules<" in index
    assert f'href="{reverse("admin:agentflow_schedule_add")}"' in index
    assert admin_client.get(changelist).url == admin_url("run_schedules")
    assert admin_client.get(reverse("admin:agentflow_schedule_add")).url == admin_url(
        "run_schedule_add"
    )
    task = scheduled()
    change = reverse("admin:agentflow_schedule_change", args=[task.id])
    assert admin_client.get(change).url == admin_url("run_schedule", task.id)
    assert Schedule.objects.get().pk == task.pk  # the proxy lists agentflow's rows only
    PeriodicTask.objects.create(
        name="not ours", task="celery.backend_cleanup", interval=task.interval
    )
    assert Schedule.objects.count() == 1


def test_schedule_permissions_are_agentflows_or_beats():
    task = scheduled()
    nobody = staff("nobody", "view_run")
    assert nobody.get(admin_url("run_schedules")).status_code == 403
    index = nobody.get(reverse("admin:index")).content.decode()
    assert "Schedules" not in index
    no_runs = staff("no_runs", "view_schedule")  # the pages list runs: no link to a 403
    assert ">Schedules<" not in no_runs.get(reverse("admin:index")).content.decode()
    assert no_runs.get(reverse("admin:agentflow_schedule_changelist")).status_code == 403
    ours = staff("ours", "view_run", "view_schedule")
    assert ours.get(admin_url("run_schedules")).status_code == 200
    assert "Schedules" in ours.get(reverse("admin:index")).content.decode()
    beats = staff("beats", "view_run", "view_periodictask")
    assert beats.get(admin_url("run_schedule", task.id)).status_code == 200
    # Viewing is not changing, deleting nor starting.
    for name in ("run_schedule_disable", "run_schedule_delete", "run_schedule_run"):
        assert ours.post(admin_url(name, task.id), {"confirm": "yes"}).status_code == 403
    assert PeriodicTask.objects.get(id=task.id).enabled
    assert not Run.objects.exists()


def test_disable_and_enable_a_schedule():
    task = scheduled()
    client = staff("changer", "view_run", "change_schedule")
    page = client.get(admin_url("run_schedule", task.id)).content.decode()
    assert 'data-testid="schedule-disable"' in page and 'data-testid="schedule-delete"' not in page
    response = client.post(admin_url("run_schedule_disable", task.id), follow=True)
    assert not PeriodicTask.objects.get(id=task.id).enabled
    assert any("Disabled" in m for m in messages_of(response))
    assert 'data-testid="schedule-enable"' in response.content.decode()
    client.post(admin_url("run_schedule_enable", task.id))
    assert PeriodicTask.objects.get(id=task.id).enabled
    assert LogEntry.objects.filter(object_id=str(task.id)).count() == 2


def test_delete_a_schedule_only_after_the_confirmation(admin_client):
    task = scheduled()
    run = new_run(status=Run.Status.SUCCEEDED, schedule=task)
    url = admin_url("run_schedule_delete", task.id)
    assert admin_client.get(url).status_code == 405
    asked = admin_client.post(url)
    assert asked.status_code == 200 and 'data-testid="confirm-page"' in asked.content.decode()
    assert "The 1 run(s) it started are kept" in asked.content.decode()
    assert PeriodicTask.objects.filter(id=task.id).exists()
    detail = admin_client.get(admin_url("run_schedule", task.id)).content.decode()
    button = re.search(r'<button[^>]*data-testid="schedule-delete"[^>]*>', detail)[0]
    assert "af-danger" in button and "data-confirm=" in button

    done = admin_client.post(url, {"confirm": "yes"})
    assert done.url == admin_url("run_schedules")
    assert not PeriodicTask.objects.filter(id=task.id).exists()
    assert Run.objects.get(id=run.id).schedule_id is None  # the run is kept
    assert LogEntry.objects.filter(object_id=str(task.id), action_flag=3).exists()


def test_run_now_starts_the_schedules_agent_with_its_input_linked_to_it(recording_dispatcher):
    owner = User.objects.create_user("owner")
    task = scheduled(owner=owner, budget={"max_steps": 50})
    client = staff("starter", "view_run", "view_schedule", "start_run")
    page = client.get(admin_url("run_schedule", task.id)).content.decode()
    key = re.search(r'name="key" value="([^"]+)"', page)[1]
    response = client.post(admin_url("run_schedule_run", task.id), {"key": key})
    run = Run.objects.get()
    assert response.url == admin_url("run_change", run.id)
    assert (run.agent, run.input, run.schedule_id, run.owner) == ("tests.mixed", {"n": 1},
                                                                  task.id, owner)  # fmt: skip
    assert Budget.objects.get(run=run).max_steps == 50
    # The same form posted twice (a double click) starts one run.
    client.post(admin_url("run_schedule_run", task.id), {"key": key})
    assert Run.objects.count() == 1
    assert executor.advance(run.id, worker="test") == "succeeded"
    # Without the start permission, no run.
    viewer = staff("viewer", "view_run", "view_schedule")
    assert viewer.post(admin_url("run_schedule_run", task.id)).status_code == 403
    assert Run.objects.count() == 1


def test_last_fired_is_the_newest_run_of_the_schedule(admin_client):
    task = scheduled()
    assert PeriodicTask.objects.get(id=task.id).last_run_at is None
    listing = admin_client.get(admin_url("run_schedules")).content.decode()
    assert 'data-testid="schedule-last-fired">\u2013<' in listing
    older = new_run(status=Run.Status.SUCCEEDED, schedule=task)
    newer = new_run(status=Run.Status.SUCCEEDED, schedule=task)
    new_run(status=Run.Status.SUCCEEDED)  # another schedule's, or none
    Run.objects.filter(id=older.id).update(created_at=timezone.now() - timezone.timedelta(days=2))
    Run.objects.filter(id=newer.id).update(created_at=timezone.now() - timezone.timedelta(hours=1))
    shown = timezone.localtime(Run.objects.get(id=newer.id).created_at).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    for url in (admin_url("run_schedules"), admin_url("run_schedule", task.id)):
        page = admin_client.get(url).content.decode()
        assert f'data-testid="schedule-last-fired">{shown}<' in page, url


def test_the_spec_is_shown_in_words(admin_client):
    every = scheduled(every=30, name="half-minute")
    cron = scheduled(every=None, crontab="0 9 * * 1-5", name="weekdays")
    odd = scheduled(every=None, crontab="*/5 9-17 * * *", name="odd")
    listing = text(admin_client.get(admin_url("run_schedules")))
    assert "every 30 seconds" in listing and "every every" not in listing
    assert "at 09:00 on Monday to Friday" in listing
    assert "crontab */5 9-17 * * *" in listing  # not a common form: the raw crontab
    assert "every 30 seconds" in text(admin_client.get(admin_url("run_schedule", every.id)))
    assert "at 09:00 on Monday to Friday" in text(
        admin_client.get(admin_url("run_schedule", cron.id))
    )
    assert odd.id


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ("* * * * *", "every minute"),
        ("*/15 * * * *", "every 15 minutes"),
        ("5 * * * *", "every hour at minute 5"),
        ("30 8 * * *", "at 08:30 every day"),
        ("0 9 * * 1-5", "at 09:00 on Monday to Friday"),
        ("0 9,17 * * mon-fri", "at 09:00 and 17:00 on Monday to Friday"),
        ("0 9 * * 1,3,5", "at 09:00 on Monday, Wednesday and Friday"),
        ("0 0 1 * *", "at 00:00 on day 1 of the month"),
        ("0 6 * 1,7 0", "at 06:00 in January and July on Sunday"),
        ("0 6 * * 7", "at 06:00 on Sunday"),
        ("*/5 9-17 * * *", "crontab */5 9-17 * * *"),
        ("0 9 L * *", "crontab 0 9 L * *"),
    ],
)
def test_crontabs_in_words(fields, words):
    assert timing.crontab(*fields.split()) == words


def test_intervals_in_words():
    assert [timing.every(n) for n in (1, 30, 60, 90, 120, 3600, 86400, 172800)] == [
        "every second", "every 30 seconds", "every minute", "every 90 seconds",
        "every 2 minutes", "every hour", "every day", "every 2 days",
    ]  # fmt: skip


def test_the_schedule_form_leaves_budget_blank_and_says_what_to_do(admin_client):
    url = admin_url("run_schedule_add")
    form = admin_client.get(url).content.decode()
    budget = re.search(r"<textarea[^>]*name=\"budget\"[^>]*>(.*?)</textarea>", form, re.S)
    assert budget[1].strip() == "", budget[0]
    base = {"agent": "tests.mixed", "input": '{"n": 1}'}
    neither = text(admin_client.post(url, base))
    assert "Say when to run it: fill in every (seconds between runs" in neither
    both = text(admin_client.post(url, {**base, "every": "60", "crontab": "* * * * *"}))
    assert "Fill in every or crontab, not both: clear one of them." in both
    bad_json = text(admin_client.post(url, {**base, "every": "60", "budget": "{max_cost: 1}"}))
    assert "This is not valid JSON: write an object like" in bad_json
    not_object = text(admin_client.post(url, {**base, "every": "60", "budget": "[1]"}))
    assert "The budget must be a JSON object of limits" in not_object
    zero = text(admin_client.post(url, {**base, "every": "0"}))
    assert "Give at least 1 second between runs, e.g. 60." in zero
    # A budget left blank schedules without one; the field does not come back as null.
    admin_client.post(url, {**base, "every": "60", "budget": ""})
    task = PeriodicTask.objects.get(task="agentflow.start_scheduled")
    assert '"budget": null' in task.kwargs
    assert not PeriodicTask.objects.exclude(id=task.id).filter(task=task.task).exists()


# -- resume says what it did -----------------------------------------------------------


def paused_by_budget(monkeypatch) -> Run:
    """A run of two $0.05 calls with a budget of $0.05: paused before the second call."""
    from tests.testapp import agents as test_agents

    def two_calls(ctx, n):
        return [ctx.call(test_agents.metered, i=i) for i in range(2)]

    monkeypatch.setattr(test_agents.metered_fan, "fn", two_calls)
    run = agentflow.start("tests.metered_fan", {"n": 2}, budget={"max_cost": "0.05"})
    assert executor.advance(run.id, worker="t") == "paused"
    return Run.objects.get(id=run.id)


def test_resume_of_a_run_still_over_budget_says_so_and_does_nothing(
    admin_client, recording_dispatcher, monkeypatch
):
    run = paused_by_budget(monkeypatch)
    budget = Budget.objects.get(run=run)
    response = admin_client.post(admin_url("run_resume", run.id), follow=True)
    [message] = messages_of(response)
    assert message.startswith("Did not resume: the run is still paused because budget")
    assert "cost spent $0.05 of $0.05, and the next step needs $0.05 more" in message
    link = admin_url("budget_change", budget.id)
    assert f'<a href="{link}" data-testid="raise-limit">{budget.name}</a>' in (
        response.content.decode()
    )
    assert Run.objects.get(id=run.id).status == Run.Status.PAUSED
    assert not LogEntry.objects.exists()

    Budget.objects.filter(id=budget.id).update(max_cost=Decimal("1.00"))
    response = admin_client.post(admin_url("run_resume", run.id), follow=True)
    assert messages_of(response) == [
        "Resumed the run; it is now waiting, and a worker continues it from where it paused."
    ]
    assert executor.advance(run.id, worker="t") == "succeeded"


def test_resume_after_the_budget_is_disabled_resumes(
    admin_client, recording_dispatcher, monkeypatch
):
    run = paused_by_budget(monkeypatch)
    Budget.objects.filter(run=run).update(enabled=False)
    response = admin_client.post(admin_url("run_resume", run.id), follow=True)
    assert messages_of(response)[0].startswith("Resumed the run; it is now waiting")
    assert Run.objects.get(id=run.id).status == Run.Status.WAITING


def test_resume_finds_the_limit_by_the_row_it_recorded_not_by_its_words(
    admin_client, recording_dispatcher, monkeypatch
):
    """The pause records the budget's id: renamed since, it still stops the run, and a
    reason whose words were changed (a redaction pattern, a translation) misleads nobody."""
    run = paused_by_budget(monkeypatch)
    budget = Budget.objects.get(run=run)
    Budget.objects.filter(id=budget.id).update(name="renamed by an operator")
    Run.objects.filter(id=run.id).update(wait_reason="[redacted]")
    paused = Event.objects.get(run=run, type=Event.Type.RUN_PAUSED).data
    assert paused["limit"] == {"kind": "budget", "id": budget.id, "limit": "cost", "need": "0.05"}
    response = admin_client.post(admin_url("run_resume", run.id), follow=True)
    [message] = messages_of(response)
    assert "still paused because budget" in message and "renamed by an operator" in message
    assert Run.objects.get(id=run.id).status == Run.Status.PAUSED


def test_resume_of_a_run_paused_by_a_policy_names_the_policy(admin_client, recording_dispatcher):
    from agentflow.models import Policy

    policy = Policy.objects.create(name="loop guard", agent="tests.mixed", max_steps=1)
    run = agentflow.start("tests.mixed", {"n": 2})
    assert executor.advance(run.id, worker="t") == "paused"
    response = admin_client.post(admin_url("run_resume", run.id), follow=True)
    [message] = messages_of(response)
    assert "still paused because policy" in message and "loop guard" in message
    assert admin_url("policy_change", policy.id) in message
    assert Run.objects.get(id=run.id).status == Run.Status.PAUSED
    Policy.objects.filter(id=policy.id).update(max_steps=100)
    response = admin_client.post(admin_url("run_resume", run.id), follow=True)
    assert messages_of(response)[0].startswith("Resumed the run")


def test_retry_names_the_failed_step_it_runs_again(admin_client, recording_dispatcher):
    run = agentflow.start("tests.browser_retry", {"flag": "fixed-now"})
    assert executor.advance(run.id, worker="t") == "failed"
    Flag.objects.create(name="fixed-now")
    response = admin_client.post(admin_url("run_resume", run.id), follow=True)
    assert messages_of(response) == [
        "Retried the failed run from its failed step, call tests.fails_until_flag at "
        "position 1; it is now waiting."
    ]
    assert executor.advance(run.id, worker="t") == "succeeded"
