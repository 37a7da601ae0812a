"""Redaction: a planted secret is never stored or published; tools still get it."""

from __future__ import annotations

import json

import pytest
from django.apps import apps
from django.contrib.auth.models import Permission, User
from django.db import connection

import agentflow
from agentflow._guardrails import redaction, sealing
from agentflow.conf import DEFAULT_REDACT
from agentflow.events import ALL_RUNS_GROUP
from agentflow.exceptions import RedactionUnavailable
from agentflow.models import Approval, Event, Run, Step
from tests.support import GroupListener, assert_form_refuses, wait_until
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "sk-live-4f9a8b7c6d5e4f3a2b1c"


@pytest.fixture(autouse=True)
def fresh_patterns():
    """Policy rows of an earlier test are gone: so must be the patterns cached from them."""
    from agentflow._guardrails import policy

    policy.clear_cache()
    redaction.clear_cache()
    yield
    policy.clear_cache()
    redaction.clear_cache()


def full_scan(secret: str = SECRET) -> dict[str, int]:
    """How often ``secret`` appears in each agentflow table, read with raw SQL."""
    found = {}
    for model in apps.get_app_config("agentflow").get_models():
        table = model._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT * FROM {table}")
            text = json.dumps(cursor.fetchall(), default=str)
        found[table] = text.count(secret)
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

    events = published(listener, run)
    assert {m["type"] for m in listener.received} == {"agentflow.batch"}
    assert SECRET not in json.dumps(events)
    assert any(e["event"] == "note" for e in events)


def published(listener: GroupListener, run: Run) -> list[dict]:
    """Every event of ``run`` the listener received, once all its stored events arrived."""
    seqs = set(Event.objects.filter(run=run).values_list("seq", flat=True))

    def mine() -> list[dict]:
        return [
            e
            for m in listener.received
            for r in m["runs"]
            if r["run"] == str(run.id)
            for e in r["events"]
        ]

    def all_arrived() -> list[dict]:
        listener.drain()
        return {e["seq"] for e in mine()} >= seqs and mine()

    return wait_until(all_arrived, timeout=30, what="every event on the channel layer")


def test_the_configured_model_key_is_redacted_wherever_it_appears(workers, monkeypatch):
    """A key of no known shape (not ``sk-``), echoed by a tool and sent in a signal."""
    key = "live9Qx7TzLm2Rb8Kp4W"
    assert redaction.redact_text(key) == key  # no pattern of the settings names it
    monkeypatch.setenv("AGENTFLOW_TEST_LLM_KEY", key)  # the key tests.settings configures
    redaction.clear_cache()
    assert redaction.redact_text(f"key={key};") == "key=[redacted];"
    listener = GroupListener(ALL_RUNS_GROUP)
    workers("w1")  # its environment holds the key too
    run = agentflow.start("tests.key_echoer")
    wait_until(
        lambda: Run.objects.get(id=run.id).status == Run.Status.WAITING,
        timeout=60,
        what="the run to wait for its signal",
    )
    agentflow.signal(run, "go", {"note": f"rotated {key} today", key: 1})
    run = agentflow.wait(run, timeout=60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    # The agent got the real values (sealed); the rows hold the replacement.
    assert run.output == {"tool_had_key": True, "signal_had_key": True}
    call = Step.objects.get(run=run, name="tests.echo_key")
    assert call.output == {
        "log": "calling the model with key=[redacted]; done",
        "key": "[redacted]",
    }
    assert run.signals.get().data == {"note": "rotated [redacted] today", "[redacted]": 1}
    assert full_scan(key) == dict.fromkeys(full_scan(key), 0)
    events = json.dumps(published(listener, run))
    assert key not in events
    assert "key=[redacted]" in events and "rotated [redacted] today" in events


def test_a_short_configured_key_is_not_redacted(monkeypatch):
    """Below the model layer's minimum length a key would blank ordinary text."""
    monkeypatch.setenv("AGENTFLOW_TEST_LLM_KEY", "x")
    redaction.clear_cache()
    assert redaction.redact_text("x marks the spot") == "x marks the spot"


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


# -- linear time, whatever the patterns (issue 20) ----------------------------------------


def reviewer() -> User:
    user = User.objects.create_user("reviewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    return User.objects.get(id=user.id)  # fresh: the permission cache is per instance


def test_patterns_are_matched_by_re2_and_backtracking_syntax_is_refused(settings):
    # RE2's time is linear in the text whatever the pattern; Python's re backtracks (an
    # 80,000-letter run took 6.6 s with the default email pattern). bench.redaction times it.
    assert type(redaction._pattern().regex).__module__ == "re2"
    settings.AGENTFLOW = {**settings.AGENTFLOW, "REDACT": [*DEFAULT_REDACT, r"secret(?=\d)"]}
    with pytest.raises(RedactionUnavailable, match=r"line 8 of AGENTFLOW\['REDACT'\]"):
        redaction.redact_text("secret1")


def test_re2_keeps_the_meaning_of_the_default_patterns():
    text = (
        "a BEARER abc.def-123456, bearer\u00a0abcdefgh1, x-sk-live-4f9a8b7c6d5e4f3a2b1c, "
        "xsk-live-4f9a8b7c6d5e4f3a2b1c, ann.lee+x@mail.example.org, AKIAABCDEFGHIJKLMNOP"
    )
    assert redaction.redact_text(text) == (
        "a [redacted], [redacted], x-[redacted], xsk-live-4f9a8b7c6d5e4f3a2b1c, [redacted], "
        "[redacted]"
    )


@pytest.mark.parametrize(
    "lines",
    ["ab.c\n\\bq\nq\\b\n\\Bzz\\B", "ab.c\n^head\ntail$\n\\Bzz\\B"],
    ids=["joined", "anchored"],
)
def test_one_scan_of_a_value_finds_what_a_scan_of_each_string_finds(lines):
    """A value's strings are joined for one scan (string by string where a pattern tests
    the edges of the text): a match may not run from one string into the next, or hide one."""
    from agentflow.models import Policy

    Policy.objects.create(name="odd", redact=lines)
    value = {
        "ab": ["c", "xabxc", "q", "aq", "qa", "head1", "1head", "tail", "tails"],
        "xzzx": "zz",
        "n": [1, None, True, "ann@example.org"],
    }
    each = [redaction.redact_text(text) for text in _strings(value)]
    assert _strings(redaction.redact(value)) == each
    assert each[:3] == ["ab", "c", "x[redacted]"]  # 'ab' + 'c' joined would match ab.c
    assert "x[redacted]x" in each and "zz" in each and "[redacted]" in each


def _strings(value: object) -> list[str]:
    found: list[str] = []
    redaction._collect(value, found)
    return found


def test_json_is_redacted_string_by_string_not_as_encoded_text():
    """The text of JSON escapes strings and puts quotes around them: patterns see values."""
    from agentflow.models import Policy

    Policy.objects.create(name="ids", redact="^ACME-\\d+$\ngeheim-ß")
    text = json.dumps({"id": "ACME-123", "note": "ein geheim-ß wort"})  # ensure_ascii: \u00df
    assert json.loads(redaction.redact_json(text)) == {
        "id": "[redacted]",
        "note": "ein [redacted] wort",
    }


def test_matches_past_the_limit_replace_the_rest_of_the_value_whole(monkeypatch):
    """Each match costs a little: a value's cost is capped at MAX_MATCHES of them."""
    monkeypatch.setattr(redaction, "MAX_MATCHES", 3)
    value = ["a@b.cc x", "c@d.ee y e@f.gg z g@h.ii tail", "clean", {"k": "v"}]
    assert redaction.redact(value) == [
        "[redacted] x",
        "[redacted] y [redacted] z [redacted]",
        "[redacted]",
        {"[redacted]": "[redacted]"},
    ]
    assert redaction.redact_text("a@b.cc " * 5) == "[redacted] " * 3 + "[redacted]"


def test_a_pattern_re2_cannot_compile_stores_nothing_and_the_run_waits(recording_dispatcher):
    """Redaction fails closed: no value is stored unredacted, and nothing fails for good."""
    from agentflow._engine import executor
    from agentflow.models import Policy

    run = agentflow.start("tests.three_steps")
    # Saved without the form's validation, as rows written before RE2 were.
    policy = Policy.objects.create(name="legacy", redact=r"secret(?=\d)")
    assert executor.advance(run.id, worker="t") == "store-unavailable"
    assert recording_dispatcher[-1][0] == run.id  # tried again in a lease's time
    run.refresh_from_db()
    assert run.status == Run.Status.PENDING and not run.error and run.event_seq == 1
    assert not Step.objects.filter(run=run).exists()
    with pytest.raises(RedactionUnavailable, match="Policy 'legacy'"):
        agentflow.start("tests.three_steps")

    policy.delete()
    assert executor.advance(run.id, worker="t") == "succeeded"


def test_the_policy_form_names_a_pattern_re2_refuses_and_why(admin_client):
    from agentflow.models import Policy

    data = {"name": "p", "enabled": "on", "tool": "", "agent": "", "effect": ""}
    for pattern, why in [
        ("ok\nsecret(?=\\d)", "line 2: 'secret(?=\\\\d)' is not a pattern RE2 can match"),
        ("(?<=key=)\\w+", "no lookbehind"),
        ("(a)\\1", "no backreferences"),
        ("ACME-\\d{,6}", "write {0,3}"),
    ]:
        assert_form_refuses(
            admin_client, "/admin/agentflow/policy/add/", {**data, "redact": pattern}, "redact", why
        )
    assert not Policy.objects.exists()


def test_the_system_check_names_a_settings_pattern_re2_refuses(settings):
    from agentflow._checks import check_redact

    assert check_redact() == []
    settings.AGENTFLOW = {**settings.AGENTFLOW, "REDACT": [*DEFAULT_REDACT, r"(?<!x)key-\d+"]}
    (error,) = check_redact()
    assert error.id == "agentflow.E006"
    assert "AGENTFLOW['REDACT'] line 8" in error.msg and "no lookbehind" in error.msg
    assert "workers store and publish nothing" in error.msg and "RE2" in error.hint


def test_an_advance_never_redacts_recorded_history_again(recording_dispatcher, monkeypatch):
    """Names, titles and a reviewer's comment were redacted when recorded: not on replay."""
    from agentflow._engine import executor

    run = agentflow.start("tests.secret_titles", {"token": SECRET})
    assert executor.advance(run.id, worker="t") == "waiting"
    approval = Approval.objects.get(run=run)
    comment = "looks right, mail ann@example.org " + "x" * 9000
    agentflow.approve(approval.id, by=reviewer(), comment=comment)

    scanned: list[str] = []  # every text a redaction pattern is matched against

    class Recording:
        def __init__(self, inner: object) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> object:
            found = getattr(self.inner, name)
            if hasattr(found, "finditer"):
                return Recording(found)
            if not callable(found):
                return found

            def call(*args: object, **kwargs: object) -> object:
                scanned.extend(a for a in args if isinstance(a, str))
                return found(*args, **kwargs)

            return call

    real = redaction._pattern
    monkeypatch.setattr(redaction, "_pattern", lambda: Recording(real()))
    assert executor.advance(run.id, worker="t2") == "succeeded"

    assert any(f"done-{SECRET}" in text for text in scanned)  # new records are redacted
    for recorded in (f"note-{SECRET}", f"Approve {SECRET}?", "looks right"):
        assert not [text for text in scanned if recorded in text], f"{recorded!r} scanned again"
    # ... and stored redacted all the same.
    decided = Step.objects.get(run=run, position=1)
    assert decided.output["comment"] == "looks right, mail [redacted] " + "x" * 9000
    assert decided.output["by"] == "reviewer" and decided.output["approved"] is True
    assert decided.name == "Approve [redacted]?"
    assert Step.objects.get(run=run, position=2).name == "done-[redacted]"
    assert full_scan() == dict.fromkeys(full_scan(), 0)
    assert "ann@example.org" not in json.dumps(list(Step.objects.values_list("output")))


def test_a_worker_redacting_a_megabyte_of_near_matches_keeps_its_lease(workers):
    """The heartbeat renews while the output is redacted (RE2 releases the GIL): no takeover.

    The output is dense with near-matches of the email pattern, its worst case; the lease is
    short, and a second worker's reconciler stands ready to take over a lapsed one.
    """
    short = {"AGENTFLOW_TEST_LEASE_SECONDS": "1.0"}
    workers("a", concurrency=1, env=short)
    workers("b", concurrency=1, env=short)
    size = 900_000
    run = agentflow.wait(agentflow.start("tests.dense_output", {"size": size}), timeout=120)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == {"length": size, "intact": True}
    assert len(Step.objects.get(run=run, name="tests.dense").output) == size  # nothing matched
    assert Execution.objects.count() == 1, "the tool ran again after a takeover"
    # One holder took the lease once, and only once.
    assert run.lease_token == 1, f"the lease was taken {run.lease_token} times"
    assert Event.objects.filter(run=run, type=Event.Type.RUN_STARTED).count() == 1
