"""The read-only admin pages render for staff, escape payloads, and refuse everyone else."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agentflow.models import Run, Step

pytestmark = pytest.mark.django_db

HOSTILE = "<script>alert('x')</script>"


@pytest.fixture
def run_with_hostile_output():
    run = Run.objects.create(
        agent="tests.mixed", agent_version="1", input={"n": 1}, status="succeeded"
    )
    step = Step.objects.create(
        run=run,
        position=0,
        kind="call",
        name="tests.record_effect",
        status="succeeded",
        args={"tag": HOSTILE},
        output=HOSTILE,
    )
    return run, step


def test_staff_see_runs_and_steps_with_payloads_escaped(admin_client, run_with_hostile_output):
    run, step = run_with_hostile_output
    assert admin_client.get(reverse("admin:agentflow_run_changelist")).status_code == 200
    page = admin_client.get(reverse("admin:agentflow_run_change", args=[run.id]))
    assert page.status_code == 200
    assert "tests.record_effect" in page.content.decode()
    step_page = admin_client.get(
        reverse("admin:agentflow_step_change", args=[step.id])
    ).content.decode()
    assert HOSTILE not in step_page
    assert "&lt;script&gt;" in step_page


def test_runs_cannot_be_edited_or_added_in_the_admin(admin_client, run_with_hostile_output):
    run, _ = run_with_hostile_output
    response = admin_client.post(
        reverse("admin:agentflow_run_change", args=[run.id]), {"status": "failed"}
    )
    assert response.status_code == 403
    assert admin_client.get(reverse("admin:agentflow_run_add")).status_code == 403
    run.refresh_from_db()
    assert run.status == "succeeded"


def test_anonymous_and_non_staff_are_refused(client, django_user_model, run_with_hostile_output):
    url = reverse("admin:agentflow_run_changelist")
    assert client.get(url).status_code == 302  # to the login page
    django_user_model.objects.create_user("plain", password="pw")
    client.login(username="plain", password="pw")
    response = client.get(url)
    assert response.status_code == 302 and "/login/" in response.url


def test_the_budget_form_says_what_each_limit_counts(admin_client):
    from django.urls import reverse

    page = admin_client.get(reverse("admin:agentflow_budget_add")).content.decode()
    assert "Prompt tokens of model calls (ctx.llm)" in page
    assert "A call reserves its max_tokens (1024 if unset) first" in page
    assert "Counts model calls (priced with AGENTFLOW['PRICES']" in page
