"""The overhead of ``ctx.llm`` over a bare ``openai`` client call, same server, same stream.

Both stream the same scripted reply (DELTAS content deltas, ``chunk_delay`` apart) from the
tests' local OpenAI-compatible server, with ``include_usage``. Bare: the official client
creates the stream and reads it to the end. agentflow: one run whose agent calls
``ctx.llm`` CALLS times, advanced in this process on PostgreSQL; each call is timed inside
the agent (from before ``ctx.llm`` to its return), so it includes recording the step, its
events and the live token deltas, but not the run's start or finish. The two alternate,
call by call, and the median of each is reported.

    python -m bench.llm_overhead CALLS DELTAS CHUNK_DELAY_MS
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from bench.common import django_site, report


def main(calls: int, deltas: int, chunk_delay_ms: float) -> None:
    from tests.openai_server import OpenAIServer, Reply

    reply = Reply(chunks=[f"w{i} " for i in range(deltas)], chunk_delay=chunk_delay_ms / 1000)
    with OpenAIServer() as server:
        server.handler = lambda body: reply
        os.environ["BENCH_LLM_URL"] = server.base_url
        django_site("agentflow_bench_llm")
        import openai

        import agentflow
        from agentflow._engine import executor
        from bench import agents

        client = openai.OpenAI(base_url=server.base_url, api_key="bench", max_retries=0)

        def bare() -> float:
            started = time.perf_counter()
            stream = client.chat.completions.create(
                model="gpt-test",
                messages=[{"role": "user", "content": "Go."}],
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=deltas,
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert len(text.split()) == deltas
            return time.perf_counter() - started

        bare_times: list[float] = []
        agents.on_llm_call = lambda: bare_times.append(bare())  # alternate, call by call
        run = agentflow.start("bench.llm_calls", {"n": calls, "max_tokens": deltas})
        assert executor.advance(run.id, worker="bench") == "succeeded"
        warm = calls // 10
        report(
            {
                "bare_llm_ms": statistics.median(bare_times[warm:]) * 1000,
                "agentflow_llm_ms": statistics.median(agents.llm_times[warm:]) * 1000,
            }
        )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
