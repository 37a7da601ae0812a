"""The scripted Anthropic server, checked through the official ``anthropic`` client.

Why: other tests trust this server to look like Anthropic's Messages API to the client the
engine uses; these pin that down (message JSON, SSE events, usage, tool_use blocks with
partial JSON, error classes, cut and held streams) without a database.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from typing import Any

import anthropic
import openai
import pytest

from agentflow.llm._base import broke_off
from tests.anthropic_server import (
    MODEL_ID,
    AnthropicServer,
    Reply,
    ToolCall,
    anthropic_server,  # noqa: F401  (fixture)
)
from tests.openai_server import OpenAIServer

MODEL = "claude-sonnet-test"
MESSAGES: list[Any] = [{"role": "user", "content": "Hi"}]
TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture
def server() -> Any:
    with AnthropicServer() as started:
        yield started


def client_for(server: AnthropicServer, **options: Any) -> anthropic.Anthropic:
    options = {"max_retries": 0, **options}
    return anthropic.Anthropic(base_url=server.base_url, api_key="sk-ant-test", **options)


def create(client: anthropic.Anthropic, **options: Any) -> Any:
    return client.messages.create(
        **{"model": MODEL, "max_tokens": 256, "messages": MESSAGES, **options}
    )


def test_non_streaming_text_with_usage(server: AnthropicServer) -> None:
    server.script(Reply("Hello there, world.", usage=(12, 4)))
    message = create(client_for(server), system="Be brief.", tools=TOOLS)

    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello there, world."
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 4)
    assert server.requests == [
        {
            "model": MODEL,
            "max_tokens": 256,
            "messages": MESSAGES,
            "system": "Be brief.",
            "tools": TOOLS,
        }
    ]
    # anthropic 2.15.0 sends the key as a Bearer token, not as x-api-key
    assert server.headers[0]["authorization"] == "Bearer sk-ant-test"
    assert "anthropic-version" in server.headers[0]
    assert server.api_key(0) == "sk-ant-test"


def test_api_key_reads_x_api_key_too(server: AnthropicServer) -> None:
    server.script(Reply("ok"))
    request = urllib.request.Request(
        f"{server.base_url}/v1/messages",
        data=json.dumps({"model": MODEL, "max_tokens": 5, "messages": MESSAGES}).encode(),
        headers={"x-api-key": "sk-ant-raw", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["request-id"].startswith("req_")
        assert json.load(response)["content"] == [{"type": "text", "text": "ok"}]
    assert server.api_key() == "sk-ant-raw"


def test_default_usage_is_deterministic(server: AnthropicServer) -> None:
    server.script(Reply("one two three"))
    usage = create(client_for(server)).usage
    assert (usage.input_tokens, usage.output_tokens) == (10, 3)


def test_wire_format_names_every_event(server: AnthropicServer) -> None:
    """The client skips SSE events without an ``event:`` line, so each must carry one."""
    server.script(Reply("a b"))
    body = {"model": MODEL, "max_tokens": 5, "messages": MESSAGES, "stream": True}
    request = urllib.request.Request(
        f"{server.base_url}/v1/messages",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = [block for block in raw.split("\n\n") if block]
    names = []
    for event in events:
        name_line, data_line = event.split("\n")
        name = name_line.removeprefix("event: ")
        assert json.loads(data_line.removeprefix("data: "))["type"] == name
        names.append(name)
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_streaming_deltas_join_to_the_text_and_usage(server: AnthropicServer) -> None:
    text = "  Streams  keep\nevery space, exactly. "
    server.script(Reply(text, usage=(7, 5)))
    events = list(create(client_for(server), stream=True))

    assert events[0].type == "message_start"
    start = events[0].message
    assert (start.model, start.role, start.content, start.stop_reason) == (
        MODEL,
        "assistant",
        [],
        None,
    )
    assert (start.usage.input_tokens, start.usage.output_tokens) == (7, 1)
    assert events[1].type == "content_block_start"
    assert (events[1].index, events[1].content_block.type) == (0, "text")
    assert events[1].content_block.text == ""
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert len(deltas) > 3
    assert all(delta.type == "text_delta" for delta in deltas)
    assert "".join(delta.text for delta in deltas) == text
    assert [e.type for e in events[-3:]] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[-2].delta.stop_reason == "end_turn"
    assert events[-2].usage.output_tokens == 5
    assert server.requests[0]["stream"] is True


def test_stream_helper_accumulates_the_same_message(server: AnthropicServer) -> None:
    server.script(Reply("Hello there, world.", usage=(12, 4)))
    with client_for(server).messages.stream(model=MODEL, max_tokens=256, messages=MESSAGES) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert pieces == ["Hello ", "there, ", "world."]
    assert final.content[0].text == "Hello there, world."  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 4)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply("abcdefghij", chunks=3), ["abcd", "efgh", "ij"]),
        (Reply(chunks=["Hel", "lo", "!"]), ["Hel", "lo", "!"]),
        (Reply("one two"), ["one ", "two"]),
    ],
)
def test_chunking(server: AnthropicServer, reply: Reply, expected: list[str]) -> None:
    server.script(reply)
    events = create(client_for(server), stream=True)
    assert [e.delta.text for e in events if e.type == "content_block_delta"] == expected


def test_two_tool_use_blocks_stream_partial_json(server: AnthropicServer) -> None:
    server.script(
        Reply(
            "Checking.",
            tool_calls=[
                ToolCall("get_weather", {"city": "Paris", "units": "metric"}),
                ToolCall("lookup", '{"query": "Eiffel tower height"}', id="toolu_custom"),
            ],
        )
    )
    events = list(create(client_for(server), stream=True, tools=TOOLS))

    starts = {e.index: e.content_block for e in events if e.type == "content_block_start"}
    assert [block.type for _, block in sorted(starts.items())] == ["text", "tool_use", "tool_use"]
    assert starts[1].name == "get_weather"
    assert starts[1].id.startswith("toolu_")
    assert starts[1].input == {}
    assert (starts[2].id, starts[2].name) == ("toolu_custom", "lookup")
    partial: dict[int, list[str]] = {1: [], 2: []}
    for event in events:
        if event.type == "content_block_delta" and event.index in partial:
            assert event.delta.type == "input_json_delta"
            partial[event.index].append(event.delta.partial_json)
    assert partial[1][0] == ""  # Anthropic opens each tool_use with an empty fragment
    assert len(partial[1]) > 3
    assert json.loads("".join(partial[1])) == {"city": "Paris", "units": "metric"}
    assert "".join(partial[2]) == '{"query": "Eiffel tower height"}'
    stops = [e.index for e in events if e.type == "content_block_stop"]
    assert stops == [0, 1, 2]
    assert events[-2].delta.stop_reason == "tool_use"
    assert events[-2].usage.output_tokens == 3  # one text delta + two tool calls


def test_stream_helper_reassembles_tool_input(server: AnthropicServer) -> None:
    calls = [ToolCall("a", {"x": 1, "nested": {"y": [1, 2, 3]}}), ToolCall("b", {"z": "w"})]
    server.script(Reply(tool_calls=calls))
    with client_for(server).messages.stream(model=MODEL, max_tokens=256, messages=MESSAGES) as s:
        final = s.get_final_message()
    assert [(b.type, b.name, b.input) for b in final.content] == [  # type: ignore[union-attr]
        ("tool_use", "a", {"x": 1, "nested": {"y": [1, 2, 3]}}),
        ("tool_use", "b", {"z": "w"}),
    ]
    assert final.stop_reason == "tool_use"


def test_non_streaming_tool_use(server: AnthropicServer) -> None:
    server.script(Reply(tool_calls=[ToolCall("a", {"x": 1}), ToolCall("b", '{"y": [2]}')]))
    message = create(client_for(server), tools=TOOLS)
    assert message.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in message.content] == [
        ("tool_use", "a", {"x": 1}),
        ("tool_use", "b", {"y": [2]}),
    ]
    assert len({block.id for block in message.content}) == 2


def test_invalid_tool_json(server: AnthropicServer) -> None:
    """Streamed, broken JSON reaches the client; a message body cannot carry it."""
    server.script(
        Reply(tool_calls=[ToolCall("a", '{"x": ')]),
        Reply(tool_calls=[ToolCall("a", '{"x" 1}')]),
        Reply(tool_calls=[ToolCall("a", "[")]),
    )
    client = client_for(server)
    # truncated JSON is parsed in partial mode: the accumulator keeps what it has, silently
    with client.messages.stream(model=MODEL, max_tokens=9, messages=MESSAGES) as stream:
        assert stream.get_final_message().content[0].input == {}  # type: ignore[union-attr]
    with (
        pytest.raises(ValueError, match="Unable to parse tool parameter JSON"),
        client.messages.stream(model=MODEL, max_tokens=9, messages=MESSAGES) as stream,
    ):
        stream.get_final_message()
    with pytest.raises(anthropic.InternalServerError, match="not a JSON object"):
        create(client)


def test_finish_reason_names_translate(server: AnthropicServer) -> None:
    server.script(Reply("cut sh", finish_reason="length"), Reply("x", finish_reason="refusal"))
    client = client_for(server)
    assert create(client).stop_reason == "max_tokens"
    events = list(create(client, stream=True))
    assert events[-2].delta.stop_reason == "refusal"


def test_rate_limit_with_retry_after(server: AnthropicServer) -> None:
    server.script(Reply(status=429, error_message="Slow down", retry_after=2))
    with pytest.raises(anthropic.RateLimitError) as caught:
        create(client_for(server))
    error = caught.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "2"
    assert error.type == "rate_limit_error"
    assert error.api_message == "Slow down"
    assert error.request_id is not None and error.request_id.startswith("req_")
    assert error.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Slow down"},
    }


def test_rate_limit_is_retried_by_the_client_after_retry_after(server: AnthropicServer) -> None:
    server.script(Reply(status=429, retry_after=0.01), Reply("after the wait"))
    message = create(client_for(server, max_retries=1))
    assert message.content[0].text == "after the wait"
    assert len(server.requests) == 2
    assert server.headers[1]["x-stainless-retry-count"] == "1"


@pytest.mark.parametrize(
    ("status", "exception", "error_type"),
    [
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
    ],
)
def test_error_statuses(
    server: AnthropicServer, status: int, exception: type[Exception], error_type: str
) -> None:
    server.script(Reply(status=status))
    with pytest.raises(exception) as caught:
        create(client_for(server))
    assert type(caught.value) is exception
    assert isinstance(caught.value, anthropic.APIStatusError)
    assert caught.value.status_code == status
    assert caught.value.type == error_type


def test_overloaded_is_an_internal_server_error(server: AnthropicServer) -> None:
    """529 raises OverloadedError, a subclass, so ``except InternalServerError`` catches it."""
    server.script(Reply(status=529, error_message="Overloaded"))
    with pytest.raises(anthropic.InternalServerError) as caught:
        create(client_for(server), stream=True)
    assert isinstance(caught.value, anthropic.OverloadedError)
    assert caught.value.api_message == "Overloaded"


def test_bad_request_carries_the_message(server: AnthropicServer) -> None:
    server.script(Reply(status=400, error_message="messages: too long"))
    with pytest.raises(anthropic.BadRequestError, match="messages: too long") as caught:
        create(client_for(server), stream=True)
    assert caught.value.type == "invalid_request_error"
    assert caught.value.api_message == "messages: too long"


def test_error_code_is_sent_as_details(server: AnthropicServer) -> None:
    server.script(Reply(status=400, error_code="tool_name_conflict"))
    with pytest.raises(anthropic.BadRequestError) as caught:
        create(client_for(server))
    assert caught.value.error_code == "tool_name_conflict"
    assert type(caught.value).__name__ == "ToolNameConflictError"


def connection_broke(exc: BaseException) -> bool:
    """What the provider treats as a broken connection, however the client wraps it.

    anthropic 0.x let a cut stream escape as the transport's own error; 2.x wraps it in
    ``APIConnectionError``. The provider handles both, so the tests accept both.
    """
    return isinstance(exc, anthropic.APIConnectionError) or broke_off(exc)


def test_cut_stream_raises_while_iterating(server: AnthropicServer) -> None:
    server.script(Reply("one two three four", cut_after=2))
    received: list[str] = []
    types: list[str] = []
    with pytest.raises(Exception) as caught:
        for event in create(client_for(server), stream=True):
            types.append(event.type)
            if event.type == "content_block_delta":
                received.append(event.delta.text)
    assert "".join(received) == "one two "
    assert "message_stop" not in types and "message_delta" not in types
    assert connection_broke(caught.value), repr(caught.value)
    assert not isinstance(caught.value, anthropic.APIStatusError)


def test_cut_stream_through_the_stream_helper(server: AnthropicServer) -> None:
    server.script(Reply("one two three four", cut_after=1))
    with (
        pytest.raises(Exception) as caught,
        client_for(server).messages.stream(model=MODEL, max_tokens=9, messages=MESSAGES) as s,
    ):
        s.get_final_message()
    assert connection_broke(caught.value), repr(caught.value)


def test_cut_non_streaming_response_raises(server: AnthropicServer) -> None:
    server.script(Reply("never whole", cut_after=0), Reply("fine"))
    client = client_for(server)
    with pytest.raises(Exception) as caught:
        create(client)
    assert connection_broke(caught.value), repr(caught.value)
    assert create(client).content[0].text == "fine"


def test_held_reply_blocks_until_released(server: AnthropicServer) -> None:
    hold = threading.Event()
    server.script(Reply("first second third", hold=hold))
    iterator = iter(create(client_for(server), stream=True))
    assert [next(iterator).type for _ in range(3)] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]  # the ping is skipped by the client
    assert server.streaming.wait(5)

    rest: list[str] = []
    finished = threading.Event()

    def read_rest() -> None:
        for event in iterator:
            if event.type == "content_block_delta":
                rest.append(event.delta.text)
        finished.set()

    reader = threading.Thread(target=read_rest, daemon=True)
    reader.start()
    assert not finished.wait(0.3), "the held stream went on before it was released"
    assert rest == []
    hold.set()
    assert finished.wait(5)
    reader.join(5)
    assert "".join(rest) == "second third"


def test_release_frees_a_held_reply_and_stop_frees_the_rest(server: AnthropicServer) -> None:
    server.script(Reply("held", hold=threading.Event(), hold_after=0))
    result: list[str] = []

    def call() -> None:
        result.append(create(client_for(server)).content[0].text)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    assert server.streaming.wait(5)  # non-streaming: held before answering
    assert result == []
    server.release()
    caller.join(5)
    assert result == ["held"]


def test_empty_script_answers_500(server: AnthropicServer) -> None:
    with pytest.raises(anthropic.InternalServerError, match="script ran out") as caught:
        create(client_for(server))
    assert caught.value.type == "api_error"
    assert len(server.requests) == 1


def test_handler_takes_precedence_over_the_script(server: AnthropicServer) -> None:
    server.script(Reply("from the script"))
    server.handler = lambda body: Reply(f"echo {body['messages'][-1]['content']}")
    assert create(client_for(server)).content[0].text == "echo Hi"
    assert server.pending == 1


def test_wait_for_requests(server: AnthropicServer) -> None:
    server.script(Reply("a"), Reply("b"))
    with pytest.raises(TimeoutError):
        server.wait_for_requests(1, timeout=0.05)

    def two_calls() -> None:
        client = client_for(server)
        for _ in range(2):
            create(client)

    threading.Thread(target=two_calls, daemon=True).start()
    assert len(server.wait_for_requests(2, timeout=10)) == 2


def test_models_list(server: AnthropicServer) -> None:
    client = client_for(server)
    assert [model.id for model in client.models.list()] == [MODEL_ID]
    assert client.models.retrieve(MODEL_ID).display_name == "Claude Test"
    assert server.requests == []


def test_one_script_drives_either_server(server: AnthropicServer) -> None:
    """The same Reply and ToolCall objects fit both servers."""
    replies = [Reply("same words"), Reply(tool_calls=[ToolCall("t", {"k": "v"}, id="c1")])]
    server.script(*replies)
    client = client_for(server)
    assert create(client).content[0].text == "same words"
    assert create(client).content[0].input == {"k": "v"}
    with OpenAIServer() as other:
        other.script(*replies)
        oa = openai.OpenAI(base_url=other.base_url, api_key="sk-test", max_retries=0)
        first = oa.chat.completions.create(model="m", messages=MESSAGES)
        assert first.choices[0].message.content == "same words"
        second = oa.chat.completions.create(model="m", messages=MESSAGES)
        assert second.choices[0].message.tool_calls[0].function.arguments == '{"k":"v"}'  # type: ignore[index, union-attr]


def test_the_fixture_and_stop(anthropic_server: AnthropicServer) -> None:  # noqa: F811
    assert anthropic_server.base_url.startswith("http://127.0.0.1:")
    assert not anthropic_server.base_url.endswith("/v1")
    anthropic_server.script(Reply("ok"))
    client = client_for(anthropic_server, timeout=5)
    assert create(client).content
    anthropic_server.stop()
    with pytest.raises(anthropic.APIConnectionError):  # also the kept-alive connection is closed
        create(client)
