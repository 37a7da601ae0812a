"""Chat Completions servers (OpenAI, vLLM, Ollama, LM Studio, most gateways), on ``openai``.

Streams every call with ``stream_options={"include_usage": True}``, so text arrives as it
is generated and the usage the server reports comes with the last chunk. The client's
own retries are off: the engine retries durably, with backoff and ``Retry-After``.

OPTIONS: ``base_url`` (None: OpenAI's), ``api_key_env`` (the environment variable that
holds the key, ``OPENAI_API_KEY`` by default) or ``api_key``, ``timeout`` in seconds for
each read (60), ``deadline`` in seconds for the whole call (600), and ``params``, default
request parameters (``{"temperature": 0}``).
"""

from __future__ import annotations

import contextlib
from functools import cached_property
from typing import Any

from agentflow.exceptions import ModelRefused, ModelUnavailable
from agentflow.llm._base import (
    Delta,
    Provider,
    Reply,
    Request,
    broke_off,
    parse_arguments,
    server_message,
)
from agentflow.llm._results import TokenUsage, ToolCall
from agentflow.llm._retry_after import retry_after_seconds

REFUSED = frozenset({400, 401, 403, 404, 405, 413, 415, 422})


class OpenAIProvider(Provider):
    """An OpenAI-compatible server, reached with the official client."""

    @cached_property
    def client(self) -> Any:
        try:
            import openai
        except ImportError as exc:  # the extra is not installed
            raise ModelRefused(
                f"model alias '{self.alias}' needs the openai package: "
                "pip install 'django-agentflow[openai]'"
            ) from exc
        return openai.OpenAI(
            base_url=self.options.get("base_url"),
            api_key=self.api_key or "unset",  # local servers accept any key
            timeout=float(self.options.get("timeout", 60)),
            max_retries=0,
        )

    def complete(self, request: Request, on_delta: Delta) -> Reply:
        import openai

        arguments: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.options.get("params", {}),
            **request.params,
        }
        if request.tools:
            arguments["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": spec.function,
                        "description": spec.description,
                        "parameters": spec.parameters,
                    },
                }
                for spec in request.tools
            ]
        ends_at = self.ends_at()
        try:
            # Closed however the reading ends, so a stream given up on is not left open.
            with contextlib.closing(self.client.chat.completions.create(**arguments)) as stream:
                return self._read(request, self.watched(stream, request, ends_at), on_delta)
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise ModelUnavailable(
                f"model alias '{self.alias}' ({self.model}) could not be reached, or its stream "
                f"broke off: "
                f"{self.without_key(str(exc))}"
            ) from None
        except ModelUnavailable:
            raise
        except Exception as exc:
            if broke_off(exc):
                raise ModelUnavailable(
                    f"the stream of model alias '{self.alias}' ({self.model}) broke off: "
                    f"{type(exc).__name__}: {self.without_key(str(exc))}"
                ) from None
            raise

    def _read(self, request: Request, stream: Any, on_delta: Delta) -> Reply:
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage, finish, model = TokenUsage(), "", self.model
        for chunk in stream:
            model = chunk.model or model
            if chunk.usage is not None:
                usage = TokenUsage(
                    chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0
                )
            for choice in chunk.choices:
                delta = choice.delta
                if delta is not None and delta.content:
                    text.append(delta.content)
                    on_delta(delta.content)
                for part in (delta.tool_calls if delta is not None else None) or []:
                    call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] = part.id or call["id"]
                    if part.function is not None:
                        call["name"] += part.function.name or ""
                        call["arguments"] += part.function.arguments or ""
                finish = choice.finish_reason or finish
        if not finish:
            raise ModelUnavailable(
                f"the stream of model alias '{self.alias}' ({self.model}) ended before the "
                "model finished (no finish_reason)"
            )
        tool_calls = []
        for index in sorted(calls):
            call = calls[index]
            parsed, invalid = parse_arguments(call["arguments"])
            name = request.tool_named(call["name"])
            tool_calls.append(ToolCall(call["id"] or f"call_{index}", name, parsed, invalid))
        return Reply("".join(text), tool_calls, usage, model, finish)

    def _status_error(self, exc: Any) -> Exception:
        status = exc.status_code
        message = self.without_key(server_message(exc))
        where = f"model alias '{self.alias}' ({self.model})"
        if status in REFUSED:
            return ModelRefused(
                f"{where} refused the request with HTTP {status}: {message}", status=status
            )
        return ModelUnavailable(
            f"{where} answered HTTP {status}: {message}",
            status=status,
            retry_after=retry_after_seconds(exc.response.headers),
        )
