"""Providers against local servers, through the official clients: no engine, no database."""

from __future__ import annotations

import threading

import pytest

from agentflow.exceptions import ModelRefused, ModelUnavailable
from agentflow.llm._anthropic_messages import AnthropicProvider
from agentflow.llm._base import Request, ToolSpec, function_name
from agentflow.llm._openai_compatible import OpenAIProvider
from agentflow.llm._scripted import ScriptedProvider
from tests.anthropic_server import AnthropicServer
from tests.openai_server import OpenAIServer, Reply, ToolCall
from tests.support import wait_until

KEY = "sk-live-0123456789abcdefghij"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("AGENTFLOW_TEST_LLM_KEY", KEY)
    with OpenAIServer() as running:
        yield running


def provider(server: OpenAIServer, **options) -> OpenAIProvider:
    return OpenAIProvider(
        "default",
        "gpt-test",
        {"base_url": server.base_url, "api_key_env": "AGENTFLOW_TEST_LLM_KEY", **options},
    )


WEATHER = ToolSpec(
    "tests.lookup",
    function_name("tests.lookup"),
    "Look up the weather.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def ask(question: str = "Hi?", **params) -> Request:
    return Request([{"role": "user", "content": question}], [], params)


def test_text_streams_in_deltas_and_usage_is_what_the_server_reported(server):
    server.script(Reply("The answer is 42.", usage=(17, 5)))
    deltas: list[str] = []
    reply = provider(server).complete(ask(max_tokens=20), deltas.append)
    assert reply.text == "The answer is 42." == "".join(deltas)
    assert len(deltas) == 4
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (17, 5)
    assert reply.finish_reason == "stop"
    sent = server.requests[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 20 and sent["model"] == "gpt-test"
    assert server.headers[0]["authorization"] == f"Bearer {KEY}"


def test_tools_go_as_json_schema_and_parallel_calls_come_back_under_agentflow_names(server):
    server.script(
        Reply(
            tool_calls=[
                ToolCall("tests__lookup", {"city": "Paris"}, id="a"),
                ToolCall("tests__lookup", {"city": "Oslo"}, id="b"),
            ]
        )
    )
    request = Request([{"role": "user", "content": "Weather?"}], [WEATHER], {})
    reply = provider(server).complete(request, lambda text: None)
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("a", "tests.lookup", {"city": "Paris"}),
        ("b", "tests.lookup", {"city": "Oslo"}),
    ]
    assert reply.finish_reason == "tool_calls"
    (offered,) = server.requests[0]["tools"]
    assert offered["function"]["name"] == "tests__lookup"
    assert offered["function"]["parameters"]["required"] == ["city"]


def test_arguments_that_are_not_a_json_object_are_kept_raw(server):
    server.script(Reply(tool_calls=[ToolCall("tests__lookup", "{not json")]))
    request = Request([{"role": "user", "content": "?"}], [WEATHER], {})
    (call,) = provider(server).complete(request, lambda text: None).tool_calls
    assert (call.arguments, call.invalid) == ({}, "{not json")


@pytest.mark.parametrize("raw", ['{"amount": 1e999}', '{"amount": NaN}', '{"a": [-Infinity]}'])
def test_arguments_with_numbers_json_cannot_carry_are_kept_raw_too(server, raw):
    server.script(Reply(tool_calls=[ToolCall("tests__lookup", raw)]))
    request = Request([{"role": "user", "content": "?"}], [WEATHER], {})
    (call,) = provider(server).answer(request, lambda text: None).tool_calls
    assert (call.arguments, call.invalid) == ({}, raw)


OTHER_KEY = "tok-0123456789abcdef-secret"  # a key no redaction pattern knows


def test_the_key_is_taken_out_of_the_text_the_arguments_and_the_deltas_even_cut_in_two(server):
    server.script(
        Reply(
            chunks=["Key: tok-0123", "456789abcdef-secret and ", OTHER_KEY, ", bye tok-01"],
            tool_calls=[ToolCall("tests__lookup", {"city": f"in {OTHER_KEY}"})],
        )
    )
    deltas: list[str] = []
    request = Request([{"role": "user", "content": "?"}], [WEATHER], {})
    reply = provider(server, api_key=OTHER_KEY).answer(request, deltas.append)
    assert server.headers[0]["authorization"] == f"Bearer {OTHER_KEY}"  # OPTIONS api_key
    assert reply.text == "Key: [redacted] and [redacted], bye tok-01" == "".join(deltas)
    for piece in ("tok-0123", "456789abcdef", "-secret"):
        assert all(piece not in delta for delta in deltas), (piece, deltas)
    assert reply.tool_calls[0].arguments == {"city": "in [redacted]"}


def test_a_key_echoed_in_an_error_is_taken_out_of_it(server):
    server.script(Reply(status=503, error_message=f"upstream refused {OTHER_KEY}"))
    with pytest.raises(ModelUnavailable) as caught:
        provider(server, api_key=OTHER_KEY).answer(ask(), lambda text: None)
    assert OTHER_KEY not in str(caught.value) and "[redacted]" in str(caught.value)


def trickle(words: int = 80, delay: float = 0.1) -> Reply:
    return Reply(chunks=[f"w{i} " for i in range(words)], chunk_delay=delay)


def test_a_stream_past_its_deadline_is_closed_and_retryable(server):
    server.script(trickle())  # 8 s in all, a word every 0.1 s: each read is quick
    seen: list[str] = []
    with pytest.raises(ModelUnavailable, match=r"did not finish within its deadline of 0\.5s"):
        provider(server, deadline=0.5).answer(ask(), seen.append)
    assert 0 < len(seen) < 80
    wait_until(lambda: server.disconnects, timeout=10, what="the server to see the stream closed")


@pytest.mark.parametrize("deadline", ["ten", 0, -1, True])
def test_a_bad_deadline_is_refused_before_anything_is_sent(server, deadline):
    with pytest.raises(ModelRefused, match=r"\['OPTIONS'\]\['deadline'\] must be a number"):
        provider(server, deadline=deadline).answer(ask(), lambda text: None)
    assert server.requests == []


def test_a_stop_request_ends_the_stream_at_its_next_event(server):
    server.script(trickle())
    stop = threading.Event()
    seen: list[str] = []

    def on_delta(text: str) -> None:
        seen.append(text)
        if len(seen) == 3:
            stop.set()  # as the heartbeat does when the run is cancelled

    request = Request([{"role": "user", "content": "?"}], stop=stop)
    with pytest.raises(ModelUnavailable, match="stopped mid-stream"):
        provider(server).answer(request, on_delta)
    assert len(seen) == 3
    wait_until(lambda: server.disconnects, timeout=10, what="the server to see the stream closed")


def test_a_rate_limit_is_retryable_and_carries_retry_after(server):
    server.script(Reply(status=429, retry_after=3, error_message="slow down"))
    with pytest.raises(ModelUnavailable, match="HTTP 429: slow down") as caught:
        provider(server).complete(ask(), lambda text: None)
    assert (caught.value.status, caught.value.retry_after) == (429, 3.0)


@pytest.mark.parametrize("status", [500, 503, 529])
def test_server_errors_and_overloads_are_retryable(server, status):
    server.script(Reply(status=status, error_message="try later"))
    with pytest.raises(ModelUnavailable, match=f"HTTP {status}") as caught:
        provider(server).complete(ask(), lambda text: None)
    assert caught.value.status == status


def test_a_stream_cut_in_the_middle_is_retryable(server):
    server.script(Reply("one two three four five", cut_after=2))
    seen: list[str] = []
    with pytest.raises(ModelUnavailable, match="stream broke off"):
        provider(server).complete(ask(), seen.append)
    assert seen == ["one ", "two "]


def test_a_refused_request_is_not_retryable_and_names_the_server_message(server):
    server.script(Reply(status=400, error_message="max_tokens is too large: 999999"))
    with pytest.raises(ModelRefused, match="HTTP 400: max_tokens is too large") as caught:
        provider(server).complete(ask(), lambda text: None)
    assert caught.value.status == 400


def test_a_bad_key_is_refused_and_the_key_never_appears_in_the_message(server):
    server.script(Reply(status=401, error_message=f"Incorrect API key provided: {KEY}."))
    with pytest.raises(ModelRefused) as caught:
        provider(server).complete(ask(), lambda text: None)
    assert KEY not in str(caught.value) and "[redacted]" in str(caught.value)


def test_an_unreachable_server_is_retryable():
    dead = OpenAIProvider("default", "gpt-test", {"base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(ModelUnavailable, match="could not be reached"):
        dead.complete(ask(), lambda text: None)


def test_the_scripted_provider_answers_by_turn_and_says_it_is_scripted():
    scripted = ScriptedProvider(
        "demo",
        "demo-model",
        {
            "responses": [
                {"tool_calls": [{"name": "tests.lookup", "arguments": {"city": "Rome"}}]},
                {"text": "It is warm in Rome.", "usage": [30, 6]},
            ]
        },
    )
    first = scripted.complete(ask("Weather in Rome?"), lambda text: None)
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("tests.lookup", {"city": "Rome"})]
    deltas: list[str] = []
    conversation = [
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": None},
        {"role": "tool", "tool_call_id": "x", "content": "{}"},
    ]
    second = scripted.complete(Request(conversation), deltas.append)
    assert second.text == "".join(deltas) == "It is warm in Rome."
    assert (second.usage.input_tokens, second.usage.output_tokens) == (30, 6)
    assert second.model == "scripted:demo-model"
    conversation.append({"role": "assistant", "content": "It is warm in Rome."})
    with pytest.raises(ModelRefused, match="has 2 responses and was asked for turn 3"):
        scripted.complete(Request(conversation), deltas.append)


# -- Anthropic's Messages API -------------------------------------------------------------


@pytest.fixture
def claude_server(monkeypatch):
    monkeypatch.setenv("AGENTFLOW_TEST_LLM_KEY", KEY)
    with AnthropicServer() as running:
        yield running


def claude(server: AnthropicServer) -> AnthropicProvider:
    options = {"base_url": server.base_url, "api_key_env": "AGENTFLOW_TEST_LLM_KEY"}
    return AnthropicProvider("claude", "claude-test", options)


def test_claude_streams_text_with_usage_and_gets_the_system_prompt_apart(claude_server):
    claude_server.script(Reply("Bonjour tout le monde.", usage=(21, 4)))
    deltas: list[str] = []
    request = Request(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}],
        [],
        {"max_tokens": 50},
    )
    reply = claude(claude_server).complete(request, deltas.append)
    assert reply.text == "".join(deltas) == "Bonjour tout le monde."
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (21, 4)
    assert reply.finish_reason == "stop"
    sent = claude_server.requests[0]
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 50
    assert sent["messages"] == [{"role": "user", "content": "Hello?"}]
    assert claude_server.api_key(0) == KEY


def test_claude_tool_calls_and_results_convert_both_ways(claude_server):
    claude_server.script(
        Reply(
            tool_calls=[
                ToolCall("tests__lookup", {"city": "Lyon"}, id="t1"),
                ToolCall("tests__lookup", {"city": "Nice"}, id="t2"),
            ]
        )
    )
    conversation = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t0", "type": "function", "function": {"name": "tests__lookup",
                                                             "arguments": '{"city": "Metz"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "t0", "content": '{"temperature": 4}'},
    ]  # fmt: skip
    reply = claude(claude_server).complete(Request(conversation, [WEATHER], {}), lambda t: None)
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("t1", "tests.lookup", {"city": "Lyon"}),
        ("t2", "tests.lookup", {"city": "Nice"}),
    ]
    assert reply.finish_reason == "tool_calls"
    sent = claude_server.requests[0]
    assert sent["tools"][0]["name"] == "tests__lookup"
    assert sent["tools"][0]["input_schema"]["required"] == ["city"]
    assert sent["messages"][1]["content"] == [
        {"type": "tool_use", "id": "t0", "name": "tests__lookup", "input": {"city": "Metz"}}
    ]
    assert sent["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "t0", "content": '{"temperature": 4}'}],
    }


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (Reply(status=429, retry_after=2, error_message="slow"), ModelUnavailable, "HTTP 429"),
        (Reply(status=529, error_message="overloaded"), ModelUnavailable, "HTTP 529"),
        (Reply(status=500, error_message="oops"), ModelUnavailable, "HTTP 500"),
        (Reply(status=400, error_message="bad max_tokens"), ModelRefused, "bad max_tokens"),
        (Reply("one two three four", cut_after=2), ModelUnavailable, "stream broke off"),
    ],
)
def test_claude_failures_are_retryable_or_refused_like_openai_ones(
    claude_server, reply, error, message
):
    claude_server.script(reply)
    with pytest.raises(error, match=message) as caught:
        claude(claude_server).complete(ask(), lambda text: None)
    if reply.retry_after:
        assert caught.value.retry_after == 2.0


def test_a_claude_stream_past_its_deadline_is_closed_and_retryable(claude_server):
    claude_server.script(trickle())
    options = {"base_url": claude_server.base_url, "deadline": 0.5}
    with pytest.raises(ModelUnavailable, match=r"'claude' \(claude-test\) did not finish"):
        AnthropicProvider("claude", "claude-test", options).answer(ask(), lambda text: None)
    wait_until(
        lambda: claude_server.disconnects, timeout=10, what="the server to see the stream closed"
    )


# -- configuration --------------------------------------------------------------------------


def test_model_aliases_are_checked_by_name_and_an_unknown_one_says_which_exist(settings):
    from agentflow import UnknownModel
    from agentflow._checks import check_models
    from agentflow.llm import _providers as providers

    assert check_models() == []
    settings.AGENTFLOW = {
        "LLM": {
            "default": {"BACKEND": "agentflow.llm.OpenAIProvider", "MODLE": "x"},
            "fast": {"BACKEND": "agentflow.llm.NoSuchProvider"},
            "odd": {"BACKEND": "agentflow.conf.get"},
        }
    }
    messages = [m.msg for m in check_models()]
    assert {m.id for m in check_models()} == {"agentflow.E003"}
    assert any(
        "['default'] has an unknown key 'MODLE'. Did you mean 'MODEL'?" in m for m in messages
    )
    assert any("['fast']['BACKEND']" in m and "cannot be imported" in m for m in messages)
    assert any("['odd']['BACKEND']" in m and "not a subclass" in m for m in messages)
    with pytest.raises(UnknownModel, match=r"No model alias 'defualt'.*Did you mean 'default'"):
        providers.get("defualt")


def test_the_built_provider_follows_the_setting(settings):
    from agentflow.llm import _providers as providers

    settings.AGENTFLOW = {
        "LLM": {"default": {"BACKEND": "agentflow.llm.ScriptedProvider", "MODEL": "m1"}}
    }
    assert providers.get().model == "m1"
    settings.AGENTFLOW = {
        "LLM": {"default": {"BACKEND": "agentflow.llm.ScriptedProvider", "MODEL": "m2"}}
    }
    assert providers.get(None).model == "m2"


def test_a_model_setting_without_a_default_alias_is_flagged(settings):
    from agentflow._checks import check_default_model

    assert check_default_model() == []
    settings.AGENTFLOW = {"LLM": {"fast": {"BACKEND": "agentflow.llm.ScriptedProvider"}}}
    (warning,) = check_default_model()
    assert warning.id == "agentflow.W004" and "(it has fast)" in warning.msg
