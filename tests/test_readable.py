"""The console read by a person: trees, titles, errors, durations, changes, compare, record page.

Unit tests of the builders (with hostile input: huge, deep, escaping), then the pages
through Django's test client on PostgreSQL.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse
from django.utils import timezone

import agentflow
from agentflow import tool
from agentflow._console import comparing, durations, trees
from agentflow._console.approval_form import changes, labelled
from agentflow._console.csp import POLICY
from agentflow._console.errors import error_view
from agentflow._engine import executor, titles
from agentflow._engine.serialize import error_record
from agentflow.exceptions import AgentflowError, ToolDefinitionError
from agentflow.models import Approval, Run, Step
from tests.test_console import (
    IMG,
    SCRIPT,
    assert_escaped,
    inline_scripts,
    new_run,
    page_url,
    queries_to_open,
)

pytestmark = pytest.mark.django_db
# -- durations and times --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(microseconds=1344), "1.3 ms"),
        (0.0004, "400 µs"),
        (0.25, "250 ms"),
        (4.3, "4.3 s"),
        (42, "42 s"),
        (242, "4 min 2 s"),
        (240, "4 min"),
        (7500, "2 h 5 min"),
        (3600, "1 h"),
        (90061, "1 d 1 h"),
        (None, "-"),
    ],
)
def test_durations_read_as_a_person_would_say_them(value, text):
    assert durations.human(value) == text


def test_times_are_relative_with_the_exact_time_on_hover():
    now = timezone.now()
    assert durations.ago(now - timedelta(seconds=185), now) == "3 min ago"
    assert durations.ago(now + timedelta(hours=2, seconds=5), now) == "in 2 h"
    assert durations.ago(now, now) == "just now"
    tag = str(durations.time_tag(now - timedelta(days=3), now))
    assert tag.startswith('<time datetime="') and 'title="' in tag and ">3 d ago</time>" in tag
    assert durations.time_tag(None) == "-"


# -- titles ---------------------------------------------------------------------------


def test_default_titles_name_the_call_with_its_short_plain_arguments():
    args = {"invoice_id": "INV-2011", "amount": "310.25", "lines": [1, 2], "memo": "x" * 500}
    assert titles.default_title("billing.pay", args) == "billing.pay: INV-2011, 310.25"
    many = {f"k{i}": i for i in range(100_000)}
    assert titles.default_title("t", many) == "t: 0, 1, 2"
    assert titles.default_title("t", {}) == "Run tool t"
    assert titles.default_title("t", {"secret": "[redacted]", "n": 1}) == "t: 1"
    assert titles.default_title("t", {"a": "two\nlines"}) == "t: two lines"


def test_an_approval_title_template_fills_with_plain_values_or_falls_back():
    template = titles.parse_template("t", "Pay {invoice_id}: {amount}")
    assert titles.approval_title("t", template, {"invoice_id": "INV-1", "amount": 5}) == (
        "Pay INV-1: 5"
    )
    # A missing key or a value that is not plain falls back to the default title.
    assert titles.approval_title("t", template, {"invoice_id": "INV-1"}) == "t: INV-1"
    assert titles.approval_title("t", template, {"invoice_id": {"a": 1}, "amount": 2}) == "t: 2"
    # Hostile values are cut: the title stays within its cap whatever they hold.
    huge = titles.approval_title("t", template, {"invoice_id": "9" * 10**6, "amount": "{x}"})
    assert len(huge) <= titles.TITLE_CHARS and huge.endswith(": {x}")
    # A value is text, never formatted again.
    tricky = {"invoice_id": "{0.__class__}", "amount": "{amount}"}
    assert titles.approval_title("t", template, tricky) == "Pay {0.__class__}: {amount}"


@pytest.mark.parametrize(
    "template",
    ["Pay {invoice.id}", "Pay {lines[0]}", "Pay {}", "Pay {0}", "Pay {amount!r}",
     "Pay {amount:>99999}", "Pay {amount", "", "x" * 500],
)  # fmt: skip
def test_a_bad_approval_title_is_refused_when_the_tool_is_declared(template):
    with pytest.raises(ToolDefinitionError) as refused:

        @tool(name=f"tests.bad_title_{abs(hash(template))}", approval_title=template)
        def bad(invoice: dict, amount: str, lines: list) -> None: ...

    assert isinstance(refused.value, AgentflowError) and isinstance(refused.value, ValueError)
    assert "approval_title" in str(refused.value)


def test_tool_approvals_are_titled_with_the_call(recording_dispatcher):
    run = agentflow.start("tests.payer", {"invoice": "INV-7", "amount": 5})
    executor.advance(run.id, worker="test")
    assert Approval.objects.get(run=run).title == "tests.pay: INV-7, 5"

    titled = agentflow.start("tests.titled_payer", {"invoice_id": "INV-2011", "amount": "310.25"})
    executor.advance(titled.id, worker="test")
    assert Approval.objects.get(run=titled).title == "Pay INV-2011: 310.25"


def test_a_secret_in_the_arguments_stays_out_of_the_title(recording_dispatcher):
    secret = "sk-live-4f9a8b7c6d5e4f3a2b1c"
    run = agentflow.start("tests.payer", {"invoice": secret, "amount": 5})
    executor.advance(run.id, worker="test")
    assert Approval.objects.get(run=run).title == "tests.pay: 5"  # the redacted value skipped
    titled = agentflow.start("tests.titled_payer", {"invoice_id": secret, "amount": "1.00"})
    executor.advance(titled.id, worker="test")
    assert Approval.objects.get(run=titled).title == "Pay [redacted]: 1.00"


def test_fan_out_children_are_titled_with_their_call(recording_dispatcher):
    run = agentflow.start("tests.titled_fan", {"n": 3})
    executor.advance(run.id, worker="test")
    found = list(Approval.objects.filter(run=run).order_by("index").values_list("title", flat=True))
    assert found == [f"Pay INV-{i}: {i}.50 (call {i} of the fan-out at 0)" for i in range(3)]


# -- trees ----------------------------------------------------------------------------


def test_a_tree_escapes_every_key_and_value():
    html = str(trees.render({SCRIPT: IMG, "nested": {"list": [SCRIPT, 1, None, True]}}))
    assert SCRIPT not in html and IMG not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert html.count("<details") == 3 and "null" in html and "true" in html


def test_a_hostile_deep_payload_renders_bounded():
    deep: object = "bottom"
    for _ in range(50_000):  # far deeper than any recursion limit
        deep = [deep]
    html = str(trees.render(deep))
    assert html.count("<details") == trees.MAX_DEPTH
    assert "[1 item] …" in html and 'data-testid="tree-cut"' in html


def test_a_hostile_wide_payload_renders_at_most_max_nodes():
    wide = {f"key{i}": {"v": i} for i in range(200_000)}
    html = str(trees.render(wide))
    assert html.count("<li") <= trees.MAX_NODES + 1
    assert len(html) < 200_000
    assert re.search(r"… \d+ more</li>", html) and "cut here" in html


def test_a_huge_string_keeps_the_payload_character_cut():
    html = str(trees.render({"text": "a" * 5_000_000, "after": "b"}))
    assert trees.CHARS <= html.count("a") < trees.CHARS + 1_000
    assert "after" not in html and "cut here" in html


def test_a_number_too_long_for_str_does_not_break_the_tree():
    assert "too long" in str(trees.render({"n": 10**5000}))


# -- errors ---------------------------------------------------------------------------


def _failure() -> dict:
    try:
        raise RuntimeError(f"the payment API answered 502 {SCRIPT}")
    except RuntimeError as exc:
        return error_record(exc, tool="billing.pay", attempts=4)


def test_an_error_shows_its_type_message_and_a_formatted_traceback():
    error = error_view(_failure())
    assert error.name == "RuntimeError" and error.type == "builtins.RuntimeError"
    assert error.details == {"tool": "billing.pay", "attempts": 4}
    html = render_to_string("agentflow/console/error.html", {"error": error})
    assert '<details class="af-traceback"' in html and "<pre" in html
    shown = html.split("<pre", 1)[1]
    assert "Traceback (most recent call last):\n" in shown  # real line breaks
    assert SCRIPT not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert error_view("plain text").message == "plain text" and error_view(None) is None


# -- approvals: labelled values and changes -------------------------------------------


def test_a_request_is_labelled_from_its_schema():
    schema = {"properties": {"amount": {"title": "Amount (USD)"}, "note": {}}}
    shown = labelled(schema, {"note": "hi", "amount": 5, "extra": [1, 2], "flag": True})
    assert [s.label for s in shown] == ["Amount (USD)", "note", "extra", "flag"]
    assert "<details" in shown[2].value and ">yes<" in shown[3].value
    assert labelled(None, None) == [] and labelled(None, 3)[0].label == "value"


def test_a_hostile_request_renders_within_one_payload_cut():
    huge = {f"k{i}": {"text": "x" * 100_000, "deep": [[[[[[[[[[1]]]]]]]]]]} for i in range(5_000)}
    shown = labelled(None, huge)
    assert len(shown) == 100  # SHOWN_FIELDS
    assert sum(len(s.value) for s in shown) < 3 * trees.CHARS  # text plus tags


def _decided(request: dict, data, status=Approval.Status.APPROVED, **fields) -> Approval:
    return Approval.objects.create(
        run=new_run(), position=0, title="t", request=request, data=data, status=status,
        decided_at=timezone.now(), **fields,
    )  # fmt: skip


def test_changes_compare_the_stored_request_with_the_decided_data():
    edited = _decided({"data": {"amount": 10, "note": "x"}}, {"amount": 25, "note": "x"})
    found = changes(edited, {"amount": 10, "note": "x"})
    assert [c.label for c in found] == ["amount"]
    assert ">10<" in found[0].proposed and ">25<" in found[0].decided
    # A sealed value left alone reads [redacted] on both sides: not a change, not revealed.
    sealed = _decided(
        {"tool": "t", "args": {"token": "[redacted]", "n": 1}},
        {"token": "[redacted]", "n": 2},
        tool="t",
    )
    assert [c.label for c in changes(sealed, {"token": "[redacted]", "n": 1})] == ["n"]
    added = _decided({"data": {"a": 1}}, {"a": 1, "b": SCRIPT})
    (change,) = changes(added, {"a": 1})
    assert "(not set)" in change.proposed and SCRIPT not in change.decided
    assert changes(_decided({"data": {"a": 1}}, None), {"a": 1}) == []
    rejected = _decided({"data": {"a": 1}}, None, status=Approval.Status.REJECTED)
    assert changes(rejected, {"a": 1}) is None


# -- pages ----------------------------------------------------------------------------


def test_the_approval_panel_shows_the_request_as_labelled_values(admin_client):
    run = new_run()
    schema = {
        "type": "object",
        "properties": {"amount": {"type": "integer", "title": "Amount (USD)"}},
    }
    Approval.objects.create(
        run=run, position=0, title="Pay?", schema=schema,
        request={"data": {"amount": 310, "lines": [{"sku": SCRIPT}]}},
    )  # fmt: skip
    html = admin_client.get(page_url(run)).content.decode()
    request = html.split('data-testid="approval-request"')[1].split("</dl>")[0]
    assert '<dt data-testid="shown-label" data-name="amount">Amount (USD)</dt>' in request
    assert '<span class="af-v af-v--number">310</span>' in request
    assert "<details" in request and "&quot;amount&quot;" not in request  # not raw JSON
    assert 'data-field="amount" data-kind="integer"' in html  # the editor stays
    assert ">Amount (USD)</label>" in html  # labelled from the schema too
    assert_escaped_script(html)


def assert_escaped_script(html: str) -> None:
    assert SCRIPT not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_decided_approval_step_shows_the_wait_and_what_the_reviewer_changed(admin_client):
    run = new_run(status=Run.Status.SUCCEEDED)
    asked = timezone.now() - timedelta(minutes=10)
    step = Step.objects.create(
        run=run, position=0, kind="approval", name="Pay?", status="succeeded",
        started_at=asked, finished_at=asked + timedelta(minutes=4, seconds=1),
        output={"approved": True, "data": {"amount": 25}},
    )  # fmt: skip
    approval = Approval.objects.create(
        run=run, step=step, position=0, title="Pay?", request={"data": {"amount": 10}},
        status="approved", data={"amount": 25}, decided_at=asked + timedelta(minutes=4),
    )  # fmt: skip
    Approval.objects.filter(id=approval.id).update(created_at=asked)
    call = Step.objects.create(
        run=run, position=1, kind="call", name="tests.pay", status="succeeded",
        started_at=asked, finished_at=asked + timedelta(minutes=2, milliseconds=1300),
        args={"amount": 1},
    )  # fmt: skip
    paid = Approval.objects.create(
        run=run, step=call, position=1, title="tests.pay: 1", tool="tests.pay",
        request={"tool": "tests.pay", "args": {"amount": 1}}, status="approved",
        decided_at=asked + timedelta(minutes=2),
    )  # fmt: skip
    Approval.objects.filter(id=paid.id).update(created_at=asked)
    html = admin_client.get(page_url(run)).content.decode()
    first = html.split('id="step-0"')[1].split("\n</tr>")[0]
    assert "waited 4 min for a person" in first
    assert 'data-testid="approval-change"' in first
    proposed = first.split('data-testid="change-proposed">')[1].split("</td>")[0]
    decided = first.split('data-testid="change-decided">')[1].split("</td>")[0]
    assert ">10<" in proposed and ">25<" in decided
    second = html.split('id="step-1"')[1].split("\n</tr>")[0]
    # Its duration is split: 1.3 s running, 2 min waiting for a person.
    assert ">1.3 s</span>" in second and "waited 2 min for a person" in second
    assert "Approved as the agent proposed it." in second
    assert "0:0" not in re.sub(r'title="[^"]*"', "", html.split('id="af-timeline"')[1])


def test_errors_show_the_exception_and_a_collapsible_traceback(admin_client):
    failure = _failure()
    run = new_run(status=Run.Status.FAILED, error=failure)
    Step.objects.create(
        run=run, position=0, kind="call", name="billing.pay", status="failed", error=failure
    )
    html = admin_client.get(page_url(run)).content.decode()
    summary = html.split('data-testid="run-error"')[1].split("</section>")[0]
    assert 'title="builtins.RuntimeError"' in summary and ">RuntimeError</strong>" in summary
    assert "the payment API answered 502" in summary
    assert '<details class="af-traceback" data-testid="traceback">' in summary  # closed
    row = html.split('id="step-0"')[1].split("\n</tr>")[0]
    assert 'data-testid="step-error"' in row and "Traceback (most recent call last):\n" in row
    assert_escaped_script(html)


def test_approvals_of_a_page_cost_one_query_whatever_their_number(admin_client):
    def run_with_approvals(count: int) -> Run:
        run = new_run()
        for position in range(count):
            step = Step.objects.create(
                run=run, position=position, kind="approval", name="q", status="succeeded"
            )
            Approval.objects.create(
                run=run, step=step, position=position, title="q", status="approved",
                request={"data": {"n": 1}}, data={"n": 2}, decided_at=timezone.now(),
            )  # fmt: skip
        return run

    small, big = run_with_approvals(2), run_with_approvals(40)
    queries_to_open(admin_client, small)  # warm caches
    assert queries_to_open(admin_client, small)[0] == queries_to_open(admin_client, big)[0]


def _compared() -> tuple[Run, Run]:
    parent = new_run(status=Run.Status.SUCCEEDED, input={"n": 1})
    fork = new_run(status=Run.Status.FAILED, parent=parent, input={"n": 1})
    for position in range(30):
        for run in (parent, fork):
            changed = run is fork and position in (12, 20)
            Step.objects.create(
                run=run, position=position, kind="call", name="tests.record_effect",
                status="succeeded", args={"tag": SCRIPT}, output="other" if changed else IMG,
            )  # fmt: skip
    return parent, fork


def test_compare_opens_with_a_summary_and_shows_only_what_differs(admin_client):
    parent, fork = _compared()
    url = reverse("admin:agentflow_run_compare") + f"?a={parent.id}&b={fork.id}"
    html = admin_client.get(url).content.decode()
    summary = html.split('data-testid="compare-summary"')[1].split("</section>")[0]
    assert 'data-testid="summary-count">2</strong> of 30 positions differ' in summary
    assert 'href="#compare-12" data-testid="summary-first">position 12</a>' in summary
    assert ">succeeded</span>" in summary and ">failed</span>" in summary
    assert re.findall(r'data-testid="compare-step" data-position="(\d+)"', html) == ["12", "20"]
    same = re.findall(r'data-testid="compare-same" data-first="(\d+)" data-last="(\d+)"', html)
    assert same == [("0", "11"), ("13", "19"), ("21", "29")]
    assert f"?a={parent.id}&amp;b={fork.id}&amp;all=1" in summary
    every = admin_client.get(url + "&all=1").content.decode()
    assert every.count('data-testid="compare-step"') == 30 and "compare-same" not in every
    assert_escaped(html)


def test_compare_summary_counts_in_one_pass():
    parent_steps = [
        type("S", (), {"position": i, "equal": i % 1000 != 7})() for i in range(100_000)
    ]
    comparison = type("C", (), {"steps": parent_steps, "first_difference": 7})()
    summary = comparing.summarize(comparison)
    assert summary.differing == 100 and summary.total == 100_000
    assert len(summary.rows) == 201  # 100 differing rows, 101 stretches of equal ones


def test_the_approval_record_page_holds_the_decide_form(recording_dispatcher):
    run = agentflow.start("tests.asker", {})
    executor.advance(run.id, worker="test")
    approval = Approval.objects.get(run=run)
    User.objects.create_superuser("boss", password="pw")
    client = Client(enforce_csrf_checks=True)
    client.login(username="boss", password="pw")
    record = reverse("admin:agentflow_approval_change", args=[approval.id])
    response = client.get(record)
    html = response.content.decode()
    assert response["Content-Security-Policy"] == POLICY and inline_scripts(html) == []
    assert "agentflow/decide.js" in html and "agentflow/socket.js" in html
    form = html.split('data-testid="decide-form"')[0].rsplit("<form", 1)[1]
    assert f'action="{reverse("agentflow:decide", args=[approval.id])}"' in form
    # The decide form stands outside the admin's own (read-only) form: forms do not nest.
    assert html.index('data-testid="decide-form"') < html.index('id="approval_form"')
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    url = reverse("agentflow:decide", args=[approval.id])
    answer = client.post(
        url, {"decision": "approve", "data": '{"limit": 7}'}, headers={"X-CSRFToken": token}
    )
    assert answer.status_code == 200 and answer.json()["status"] == "approved"

    decided = client.get(record).content.decode()
    assert 'data-testid="decide-form"' not in decided
    assert 'data-testid="approval-decision"' in decided and "by boss" in decided
    change = decided.split('data-testid="approval-change"')[1].split("</tr>")[0]
    assert ">10<" in change and ">7<" in change


def test_the_record_page_offers_no_form_without_the_decide_permission(recording_dispatcher):
    run = agentflow.start("tests.asker", {})
    executor.advance(run.id, worker="test")
    approval = Approval.objects.get(run=run)
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_approval", "view_run"])
    )
    client = Client()
    client.force_login(viewer)
    html = client.get(reverse("admin:agentflow_approval_change", args=[approval.id])).content
    assert b'data-testid="approval-request"' in html and b'data-testid="decide-form"' not in html
    assert b"Deciding needs the permission" in html


def test_the_queue_titles_and_labels_are_escaped(admin_client):
    run = new_run()
    Approval.objects.create(
        run=run, position=0, title=SCRIPT, request={"data": {SCRIPT: IMG}},
        schema={"properties": {SCRIPT: {"title": IMG}}},
    )  # fmt: skip
    html = admin_client.get(reverse("admin:agentflow_approval_queue")).content.decode()
    assert_escaped(html)


def test_time_waiting_for_a_person_counts_overlapping_approvals_once(admin_client):
    """A fan-out's approvals asked together count once; later ones add; pending runs to now."""
    from agentflow._console.timeline import person_wait

    run = Run.objects.create(agent="tests.fan", agent_version="1", status="waiting")
    t0 = timezone.now() - timedelta(hours=1)

    def asked(position, index, start_min, end_min=None):
        approval = Approval.objects.create(run=run, position=position, index=index, title="t")
        decided = None if end_min is None else t0 + timedelta(minutes=end_min)
        Approval.objects.filter(id=approval.id).update(
            created_at=t0 + timedelta(minutes=start_min),
            decided_at=decided,
            status="pending" if end_min is None else "approved",
        )

    asked(0, 0, 0, 10)  # three children asked at once, decided over ten minutes
    asked(0, 1, 0, 4)
    asked(0, 2, 1, 7)
    asked(3, None, 20, 25)  # a later call: five more minutes
    assert person_wait(run) == timedelta(minutes=15)
    asked(4, None, 22, 30)  # overlaps the one before: only its last five minutes add
    assert person_wait(run) == timedelta(minutes=20)
    asked(5, None, 50)  # pending since ten minutes ago
    waited = person_wait(run)
    assert timedelta(minutes=30) <= waited < timedelta(minutes=31)
    page = admin_client.get(reverse("admin:agentflow_run_change", args=[run.id]))
    assert re.search(r'data-testid="run-person-wait">30 min', page.content.decode())
