"""The scripted OpenAI server, checked through the official ``openai`` client.

Why: other tests trust this server to look like OpenAI to the client the engine uses;
these pin that down (JSON, SSE chunks, usage, parallel tool calls, errors, cut and held
streams) without a database.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import openai
import pytest

from agentflow.llm._base import broke_off
from tests.openai_server import (
    MODEL_ID,
    OpenAIServer,
    Reply,
    ToolCall,
    openai_server,  # noqa: F401  (fixture)
)

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def server() -> Any:
    with OpenAIServer() as started:
        yield started


def client_for(server: OpenAIServer, **options: Any) -> openai.OpenAI:
    options = {"max_retries": 0, **options}
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", **options)


def test_non_streaming_text_with_usage(server: OpenAIServer) -> None:
    server.script(Reply("Hello there, world.", usage=(12, 4)))
    completion = client_for(server).chat.completions.create(model=MODEL, messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello there, world."
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 4)
    assert completion.usage.total_tokens == 16
    assert server.requests == [{"model": MODEL, "messages": MESSAGES}]
    assert server.headers[0]["authorization"] == "Bearer sk-test"


def test_default_usage_is_deterministic(server: OpenAIServer) -> None:
    server.script(Reply("one two three"))
    completion = client_for(server).chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.usage is not None
    assert completion.usage.model_dump(include={"prompt_tokens", "completion_tokens"}) == {
        "prompt_tokens": 10,
        "completion_tokens": 3,
    }


def test_streaming_deltas_join_to_the_text_and_usage_comes_last(server: OpenAIServer) -> None:
    text = "  Streams  keep\nevery space, exactly. "
    server.script(Reply(text, usage=(7, 5)))
    stream = client_for(server).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert all(chunk.object == "chat.completion.chunk" and chunk.model == MODEL for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [
        c.choices[0].delta.content for c in chunks if c.choices if c.choices[0].delta.content
    ]
    assert len(content) > 3
    assert "".join(content) == text
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(
        include={"prompt_tokens", "completion_tokens", "total_tokens"}
    ) == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    assert server.requests[0]["stream"] is True
    assert server.requests[0]["stream_options"] == {"include_usage": True}


def test_streaming_without_include_usage_sends_no_usage(server: OpenAIServer) -> None:
    server.script(Reply("a b c"))
    chunks = list(
        client_for(server).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    )
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply("abcdefghij", chunks=3), ["abcd", "efgh", "ij"]),
        (Reply(chunks=["Hel", "lo", "!"]), ["Hel", "lo", "!"]),
        (Reply("one two"), ["one ", "two"]),
    ],
)
def test_chunking(server: OpenAIServer, reply: Reply, expected: list[str]) -> None:
    server.script(reply)
    stream = client_for(server).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    deltas = [c.choices[0].delta.content for c in stream if c.choices[0].delta.content]
    assert deltas == expected


def test_parallel_tool_calls_stream_and_reassemble(server: OpenAIServer) -> None:
    server.script(
        Reply(
            tool_calls=[
                ToolCall("get_weather", {"city": "Paris", "units": "metric"}),
                ToolCall("lookup", '{"query": "Eiffel tower height"}', id="call_custom"),
            ]
        )
    )
    stream = client_for(server).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    calls: dict[int, dict[str, str]] = {}
    headers_seen: list[int] = []
    finish_reasons = []
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish_reasons.append(choice.finish_reason)
        assert not choice.delta.content
        for delta in choice.delta.tool_calls or []:
            assert delta.function is not None
            if delta.id is not None:  # the first chunk of a call, as OpenAI sends it
                assert delta.type == "function"
                assert delta.function.arguments == ""
                headers_seen.append(delta.index)
                calls[delta.index] = {"id": delta.id, "name": delta.function.name or ""}
                calls[delta.index]["arguments"] = ""
            else:
                assert delta.function.name is None
                calls[delta.index]["arguments"] += delta.function.arguments or ""

    assert headers_seen == [0, 1]
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "units": "metric"}
    assert calls[0]["id"].startswith("call_")
    assert calls[1] == {
        "id": "call_custom",
        "name": "lookup",
        "arguments": '{"query": "Eiffel tower height"}',
    }
    assert finish_reasons[-1] == "tool_calls"


def test_non_streaming_tool_calls(server: OpenAIServer) -> None:
    server.script(Reply(tool_calls=[ToolCall("a", {"x": 1}), ToolCall("b", {"y": [2]})]))
    completion = client_for(server).chat.completions.create(model=MODEL, messages=MESSAGES)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("a", {"x": 1}),
        ("b", {"y": [2]}),
    ]
    assert len({c.id for c in calls}) == 2


def test_rate_limit_with_retry_after(server: OpenAIServer) -> None:
    server.script(Reply(status=429, error_message="Slow down", retry_after=2))
    with pytest.raises(openai.RateLimitError) as caught:
        client_for(server).chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.message.endswith("Slow down")
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.body == {
        "message": "Slow down",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }


def test_rate_limit_is_retried_by_the_client_after_retry_after(server: OpenAIServer) -> None:
    server.script(Reply(status=429, retry_after=0.01), Reply("after the wait"))
    completion = client_for(server, max_retries=1).chat.completions.create(
        model=MODEL, messages=MESSAGES
    )
    assert completion.choices[0].message.content == "after the wait"
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (500, openai.InternalServerError),
        (529, openai.InternalServerError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
    ],
)
def test_error_statuses(server: OpenAIServer, status: int, exception: type[Exception]) -> None:
    server.script(Reply(status=status))
    with pytest.raises(exception) as caught:
        client_for(server).chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.status_code == status  # type: ignore[attr-defined]


def test_bad_request_carries_the_message(server: OpenAIServer) -> None:
    server.script(Reply(status=400, error_message="messages: too long", error_code="too_long"))
    with pytest.raises(openai.BadRequestError, match="messages: too long") as caught:
        client_for(server).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert caught.value.type == "invalid_request_error"
    assert caught.value.code == "too_long"


def connection_broke(exc: BaseException) -> bool:
    """What the provider treats as a broken connection, however the client wraps it."""
    return isinstance(exc, openai.APIConnectionError | openai.APITimeoutError) or broke_off(exc)


def test_cut_stream_raises_while_iterating(server: OpenAIServer) -> None:
    server.script(Reply("one two three four", cut_after=2))
    stream = client_for(server).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    received: list[str] = []
    with pytest.raises(Exception) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "one two "
    assert connection_broke(caught.value), repr(caught.value)


def test_cut_non_streaming_response_raises(server: OpenAIServer) -> None:
    server.script(Reply("never whole", cut_after=0), Reply("fine"))
    client = client_for(server)
    with pytest.raises(Exception) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert connection_broke(caught.value), repr(caught.value)
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content == "fine"


def test_held_reply_blocks_until_released(server: OpenAIServer) -> None:
    hold = threading.Event()
    server.script(Reply("first second third", hold=hold))
    stream = client_for(server).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    iterator = iter(stream)
    assert next(iterator).choices[0].delta.role == "assistant"
    assert next(iterator).choices[0].delta.content == "first "
    assert server.streaming.wait(5)

    rest: list[str] = []
    finished = threading.Event()

    def read_rest() -> None:
        rest.extend(chunk.choices[0].delta.content or "" for chunk in iterator)
        finished.set()

    reader = threading.Thread(target=read_rest, daemon=True)
    reader.start()
    assert not finished.wait(0.3), "the held stream went on before it was released"
    assert rest == []
    hold.set()
    assert finished.wait(5)
    reader.join(5)
    assert "".join(rest) == "second third"


def test_a_client_that_closes_a_trickling_stream_is_counted(server: OpenAIServer) -> None:
    server.script(Reply(chunks=[f"w{i} " for i in range(200)], chunk_delay=0.05))
    stream = client_for(server).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    iterator = iter(stream)
    next(iterator), next(iterator)
    assert server.disconnects == 0 and not server.disconnected.is_set()
    stream.close()
    assert server.disconnected.wait(10)
    assert server.disconnects == 1


def test_release_frees_a_held_reply_and_stop_frees_the_rest(server: OpenAIServer) -> None:
    server.script(Reply("held", hold=threading.Event(), hold_after=0))
    result: list[str] = []

    def call() -> None:
        completion = client_for(server).chat.completions.create(model=MODEL, messages=MESSAGES)
        result.append(completion.choices[0].message.content or "")

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    assert server.streaming.wait(5)  # non-streaming: held before answering
    assert result == []
    server.release()
    caller.join(5)
    assert result == ["held"]


def test_empty_script_answers_500(server: OpenAIServer) -> None:
    with pytest.raises(openai.InternalServerError, match="script ran out") as caught:
        client_for(server).chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.code == "script_exhausted"
    assert len(server.requests) == 1


def test_handler_takes_precedence_over_the_script(server: OpenAIServer) -> None:
    server.script(Reply("from the script"))
    server.handler = lambda body: Reply(f"echo {body['messages'][-1]['content']}")
    completion = client_for(server).chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content == "echo Hi"
    assert server.pending == 1


def test_wait_for_requests(server: OpenAIServer) -> None:
    server.script(Reply("a"), Reply("b"))
    with pytest.raises(TimeoutError):
        server.wait_for_requests(1, timeout=0.05)

    def two_calls() -> None:
        client = client_for(server)
        for _ in range(2):
            client.chat.completions.create(model=MODEL, messages=MESSAGES)

    threading.Thread(target=two_calls, daemon=True).start()
    assert len(server.wait_for_requests(2, timeout=10)) == 2


def test_models_list(server: OpenAIServer) -> None:
    models = client_for(server).models.list()
    assert [model.id for model in models.data] == [MODEL_ID]
    assert server.requests == []


def test_the_fixture_and_stop(openai_server: OpenAIServer) -> None:  # noqa: F811
    assert openai_server.base_url.startswith("http://127.0.0.1:")
    assert openai_server.base_url.endswith("/v1")
    openai_server.script(Reply("ok"))
    client = client_for(openai_server, timeout=5)
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES).choices
    openai_server.stop()
    with pytest.raises(openai.APIConnectionError):  # also the kept-alive connection is closed
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
