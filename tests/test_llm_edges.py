"""A model call at its edges: what a server may answer, and what agentflow then records.

Replies too large to store, impossible usage, arguments JSON cannot carry, streams that
trickle past their deadline or outlive a cancel, and secrets (the API key, or a pattern's
match cut in two) in what streams. The engine runs in this process where the case does
not need a worker (``executor.advance`` with a recording dispatcher); a cancel, a deadline
and the live delta frames run on real workers.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from uuid import uuid4

import pytest

import agentflow
from agentflow._engine import executor
from agentflow._engine.ops.llm import Deltas
from agentflow._guardrails.redaction import redact_text
from agentflow._guardrails.sealing import reveal
from agentflow.conf import DEFAULT_REDACT
from agentflow.models import Budget, BudgetSpend, Event, Run, Step
from tests.openai_server import OpenAIServer, Reply, ToolCall
from tests.support import GroupListener, wait_until
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

MAX_TOKENS = 2**31 - 1  # Step.input_tokens and output_tokens are PositiveIntegerFields
CARD = r"\b(?:\d{4} ){3}\d{4}\b"  # a pattern whose matches span several words


@pytest.fixture
def model_server():
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def local_model(settings, recording_dispatcher, model_server):
    """The engine in this process, its model aliases on the local server."""
    llm = copy.deepcopy(settings.AGENTFLOW["LLM"])
    for alias in ("default", "slow"):
        llm[alias]["OPTIONS"]["base_url"] = model_server.base_url
    settings.AGENTFLOW = {**settings.AGENTFLOW, "LLM": llm}
    return model_server


def advance(run: Run) -> Run:
    executor.advance(run.id, worker="test")
    run.refresh_from_db()
    return run


def llm_step(run: Run) -> Step:
    return Step.objects.get(run=run, kind="llm")


# -- 1. a reply too large to store is charged all the same --------------------------------


def test_a_reply_too_large_to_store_fails_the_step_but_its_usage_is_charged(local_model, settings):
    settings.AGENTFLOW = {**settings.AGENTFLOW, "MAX_PAYLOAD_BYTES": 4_000}
    local_model.script(Reply("lorem ipsum " * 1_000, usage=(100_000, 400_000)))
    run = agentflow.start("tests.ask_model", {"question": "Essay?"}, budget={"max_cost": "50"})
    run = advance(run)

    assert run.status == Run.Status.FAILED
    assert "too large to store" in run.error["message"]
    assert "MAX_PAYLOAD_BYTES" in run.error["message"]
    cost = (Decimal(100_000) * 2 + Decimal(400_000) * 8) / 1_000_000  # $3.40
    spend = BudgetSpend.objects.get(budget=Budget.objects.get(run=run))
    assert (spend.input_tokens, spend.output_tokens, spend.cost) == (100_000, 400_000, cost)
    step = llm_step(run)
    assert step.status == Step.Status.FAILED
    assert (step.input_tokens, step.output_tokens, step.cost) == (100_000, 400_000, cost)
    assert len(local_model.requests) == 1  # refused for good: not asked again


# -- 3. arguments JSON cannot carry go back to the model ----------------------------------


def test_arguments_with_numbers_json_cannot_carry_go_back_to_the_model(local_model):
    local_model.script(
        Reply(
            tool_calls=[
                ToolCall("tests__lookup", '{"city": 1e999}'),
                ToolCall("tests__lookup", '{"city": NaN}'),
                ToolCall("tests__lookup", '{"city": "Par\\u0000is"}'),
                ToolCall("tests__lookup", {"city": "Oslo"}),
            ]
        ),
        Reply("Oslo is 4 degrees.", usage=(30, 5)),
    )
    run = advance(agentflow.start("tests.tool_loop", {"question": "Weather?"}))

    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == {"text": "Oslo is 4 degrees.", "finish_reason": "stop"}
    tool_messages = [m for m in local_model.requests[1]["messages"] if m["role"] == "tool"]
    infinite, nan, nul, oslo = (m["content"] for m in tool_messages)
    assert infinite.startswith("error: the arguments") and "1e999" in infinite
    assert nan.startswith("error: the arguments") and "NaN" in nan
    assert nul.startswith("error: the arguments") and "\\u0000" in nul
    assert oslo == '{"city": "Oslo", "temperature": 4}'
    assert list(Execution.objects.values_list("key", flat=True)) == ["lookup:Oslo"]
    first = Step.objects.filter(run=run, kind="llm").order_by("position").first()
    assert [bool(call.get("invalid")) for call in first.output["tool_calls"]] == [
        True,
        True,
        True,
        False,
    ]


# -- 4. usage a server cannot have meant ---------------------------------------------------


def test_token_counts_past_the_columns_range_are_capped_and_charged_once(local_model):
    local_model.script(Reply("Big.", usage=(3_000_000_000, 5)))
    run = agentflow.start("tests.ask_model", {"question": "Huge?"}, budget={"max_cost": "99999"})
    run = advance(run)

    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["usage"] == [MAX_TOKENS, 5]
    cost = (Decimal(MAX_TOKENS) * 2 + Decimal(5) * 8) / 1_000_000
    step = llm_step(run)
    assert (step.status, step.attempts) == (Step.Status.SUCCEEDED, 1)
    assert (step.input_tokens, step.output_tokens, step.cost) == (MAX_TOKENS, 5, cost)
    spend = BudgetSpend.objects.get(budget=Budget.objects.get(run=run))
    assert (spend.input_tokens, spend.output_tokens, spend.cost) == (MAX_TOKENS, 5, cost)
    assert len(local_model.requests) == 1


@pytest.mark.parametrize(
    ("usage", "named"), [((-5, 7), "input_tokens=-5"), ((12, -1), "output_tokens=-1")]
)
def test_a_negative_token_count_fails_the_step_with_a_clear_error_and_no_second_call(
    local_model, usage, named
):
    local_model.script(Reply("Odd.", usage=usage), Reply("never asked"))
    run = agentflow.start("tests.ask_model", {"question": "Odd?"}, budget={"max_cost": "5"})
    run = advance(run)

    assert run.status == Run.Status.FAILED
    message = f"model alias 'default' (gpt-test) reported an impossible usage: {named}"
    assert message in run.error["message"]
    step = llm_step(run)
    assert (step.status, step.attempts) == (Step.Status.FAILED, 1)
    assert message in step.error["message"]
    assert step.error["type"] == "agentflow.exceptions.ModelRefused"
    assert (step.input_tokens, step.output_tokens) == (0, 0)
    assert len(local_model.requests) == 1
    # The estimate reserved before the call stays charged: the server did answer.
    spend = BudgetSpend.objects.get(budget=Budget.objects.get(run=run))
    assert spend.output_tokens == 64 and spend.cost > 0


# -- 2. a total deadline per call, and cancel ends the stream ------------------------------


def trickle(words: int, delay: float, **options) -> Reply:
    """A reply that sends one word every ``delay`` seconds."""
    return Reply(chunks=[f"w{i} " for i in range(words)], chunk_delay=delay, **options)


def test_a_stream_that_trickles_past_its_deadline_fails_the_step_and_is_closed(
    workers, model_server
):
    # The alias "slow" allows 1.5 s a call and one retry; each reply would take 40 s.
    model_server.script(trickle(160, 0.25), trickle(160, 0.25))
    workers("w1", env={"AGENTFLOW_TEST_OPENAI_URL": model_server.base_url})
    run = agentflow.start("tests.ask_model", {"question": "Slowly?", "model": "slow"})
    run = agentflow.wait(run, 60)

    assert run.status == Run.Status.FAILED
    step = llm_step(run)
    assert (step.name, step.status, step.attempts) == ("slow", Step.Status.FAILED, 2)
    assert step.error["type"] == "agentflow.exceptions.ModelUnavailable"  # retryable
    assert "did not finish within its deadline of 1.5s" in step.error["message"]
    retried = run.events.get(type="step.retrying", data__position=step.position)
    assert "deadline of 1.5s" in retried.data["error"]
    wait_until(
        lambda: model_server.disconnects >= 2,
        timeout=30,
        what="the server to see both streams closed by the client",
    )


def test_cancelling_a_run_closes_its_model_stream_and_frees_the_worker(workers, model_server):
    model_server.script(trickle(600, 0.2), Reply("Next.", usage=(3, 1)))  # 120 s, then quick
    workers("w1", concurrency=1, env={"AGENTFLOW_TEST_OPENAI_URL": model_server.base_url})
    run = agentflow.start("tests.ask_model", {"question": "Forever?"})
    model_server.wait_for_requests(1, timeout=60)
    wait_until(
        lambda: Step.objects.filter(run=run, kind="llm", status=Step.Status.RUNNING).exists(),
        timeout=30,
        what="the model call to be running",
    )
    agentflow.cancel(run)
    assert model_server.disconnected.wait(30), "the cancelled run's stream stayed open"

    # The one worker process is free: the next run's task runs on it.
    second = agentflow.wait(agentflow.start("tests.ask_model", {"question": "Next?"}), 30)
    assert second.status == Run.Status.SUCCEEDED, second.error
    assert second.output["text"] == "Next."
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    assert len(model_server.requests) == 2  # the cancelled call was not asked again


# -- 5. the API key echoed back is never stored or streamed --------------------------------

KEY = "tok-0123456789abcdef-secret"  # no redaction pattern matches it


def delta_frames(listener: GroupListener) -> list[str]:
    return [
        event["data"]["text"]
        for message in listener.drain()
        if message["type"] == "agentflow.deltas"
        for event in message["events"]
    ]


def stored_text(run: Run) -> str:
    """Everything the run's rows hold as text, sealed values opened."""
    parts = [repr(Run.objects.filter(id=run.id).values().get())]
    for step in Step.objects.filter(run=run).values():
        parts.append(repr(step))
        parts.append(repr(reveal(step["output"], step["sealed_output"])))
    parts += [repr(e) for e in Event.objects.filter(run=run).values_list("type", "data")]
    return "\n".join(parts)


def test_the_api_key_echoed_in_a_reply_is_neither_stored_nor_streamed(workers, model_server):
    from agentflow.events import run_group

    chunks = ["Your key is ", KEY, ", again: tok-01234", "56789abcdef-secret. ", "Done."]
    model_server.script(Reply(chunks=chunks, chunk_delay=0.1, usage=(4, 5)))
    run = agentflow.start("tests.ask_model", {"question": "Key?"})
    listener = GroupListener(run_group(run.id))
    workers("w1", env={"AGENTFLOW_TEST_OPENAI_URL": model_server.base_url,
                       "AGENTFLOW_TEST_LLM_KEY": KEY})  # fmt: skip
    run = agentflow.wait(run, 60)

    assert run.status == Run.Status.SUCCEEDED, run.error
    assert model_server.headers[0]["authorization"] == f"Bearer {KEY}"  # it was the key
    assert run.output["text"] == "Your key is [redacted], again: [redacted]. Done."
    frames = delta_frames(listener)
    assert "".join(frames) == run.output["text"]
    for piece in (KEY, "tok-01234", "56789abcdef-secret"):
        assert all(piece not in frame for frame in frames), (piece, frames)
    assert KEY not in stored_text(run)
    assert "56789abcdef-secret" not in stored_text(run)


# -- 6. a secret split across two deltas -----------------------------------------------------

FILLER = "lorem ipsum dolor sit amet, consectetur adipiscing elit. "
SPLIT_SECRETS = [
    "Key: sk-abc",
    "def0123456789xyzABCD ",
    FILLER,
    "mail al",
    "ice@exam",
    "ple.com ",
    FILLER,
    "card 4111 1111",
    " 1111 1111 ",
    FILLER,
    "auth Bearer ",
    "abcdefgh12345678 ",
    FILLER,
    FILLER,
    "end.",
]
PARTS = [
    "sk-abc",
    "def0123456789",
    "alice",
    "ice@",
    "example.com",
    "4111",
    "1111 1111",
    "abcdefgh12345678",
]


def test_deltas_never_publish_a_secret_cut_across_pieces_even_flushing_every_piece(settings):
    settings.AGENTFLOW = {**settings.AGENTFLOW, "REDACT": [*DEFAULT_REDACT, CARD]}
    sent: list[str] = []
    deltas = Deltas(uuid4(), 1)
    deltas.send = lambda run_id, type_, data: sent.append(data["text"])
    deltas.INTERVAL = 0  # a frame after every piece, wherever possible
    for piece in SPLIT_SECRETS:
        deltas(piece)
    deltas.flush(final=True)

    whole = "".join(SPLIT_SECRETS)
    assert "".join(sent) == redact_text(whole)
    assert len(sent) > 3  # live: not one frame at the end
    for part in PARTS:
        assert all(part not in frame for frame in sent), (part, sent)


def test_streaming_redaction_work_stays_linear_in_the_text(settings, monkeypatch):
    from agentflow._engine.ops import llm

    scanned = []

    def counting(text: str) -> str:
        scanned.append(len(text))
        return redact_text(text)

    monkeypatch.setattr(llm, "redact_text", counting)
    sent: list[str] = []
    deltas = Deltas(uuid4(), 1)
    deltas.send = lambda run_id, type_, data: sent.append(data["text"])
    deltas.INTERVAL = 3600  # frames by size only
    text = ("x" * 3_000 + " " + "lorem ipsum " * 250) * 10  # 60 kB: long words, short ones
    for char in text:
        deltas(char)
    deltas.flush(final=True)
    assert "".join(sent) == text
    assert sum(scanned) < 5 * len(text)  # each character redacted a few times, not per delta


def test_secrets_split_across_streamed_deltas_never_reach_a_frame(workers, model_server):
    from agentflow.events import run_group
    from agentflow.models import Policy

    Policy.objects.create(name="cards", redact=CARD)
    model_server.script(Reply(chunks=SPLIT_SECRETS, chunk_delay=0.12, usage=(4, 15)))
    run = agentflow.start("tests.ask_model", {"question": "Secrets?"})
    listener = GroupListener(run_group(run.id))
    workers("w1", env={"AGENTFLOW_TEST_OPENAI_URL": model_server.base_url})
    run = agentflow.wait(run, 60)

    assert run.status == Run.Status.SUCCEEDED, run.error
    frames = delta_frames(listener)
    assert len(frames) > 3
    assert "".join(frames) == run.output["text"]
    for part in PARTS:
        assert all(part not in frame for frame in frames), (part, frames)
        assert part not in run.output["text"]
    assert run.output["text"].startswith("Key: [redacted] lorem")
    assert "mail [redacted] lorem" in run.output["text"]
    assert "card [redacted] lorem" in run.output["text"]
