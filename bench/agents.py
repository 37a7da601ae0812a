"""The agents and tools the benchmarks run (discovered like any app's agents.py)."""

from __future__ import annotations

import time

import redis
from django.conf import settings

from agentflow import RunContext, agent, tool

# Step timestamps of the in-process per-step benchmark.
stamps: list[float] = []


def tick(i: int) -> int:
    stamps.append(time.perf_counter())
    return i


@agent(name="bench.steps")
def long_run(ctx: RunContext, n: int) -> int:
    for i in range(n):
        ctx.step(tick, i)
    return n


@agent(name="bench.three")
def three(ctx: RunContext) -> int:
    return sum(ctx.step(tick, i) for i in range(3))


@tool(name="bench.noop", retries=0)
def noop(i: int) -> int:
    return i


@agent(name="bench.fan_out")
def fan_out(ctx: RunContext, n: int) -> int:
    return len(ctx.map(noop, [{"i": i} for i in range(n)]))


@tool(name="bench.rated", rate_limit="20/s")
def rated(i: int) -> int:
    redis.Redis.from_url(settings.REDIS_URL).rpush("bench:starts", time.time())
    return i


@agent(name="bench.rated_fan_out")
def rated_fan_out(ctx: RunContext, n: int) -> int:
    return len(ctx.map(rated, [{"i": i} for i in range(n)]))


# Commit times of the websocket benchmark's steps: run id -> one stamp per step.
commits: dict[str, list[float]] = {}


def paced(run_id: str, gap: float) -> None:
    """Wait ``gap`` seconds, then stamp: the step's commit follows at once."""
    time.sleep(gap)
    commits.setdefault(run_id, []).append(time.monotonic())


@agent(name="bench.paced")
def paced_run(ctx: RunContext, n: int, gap: float) -> int:
    for _ in range(n):
        ctx.step(paced, str(ctx.run.id), gap)
    return n


@agent(name="bench.sleeper")
def sleeper(ctx: RunContext, n: int) -> int:
    """Suspend n times in a row: each 0.1 ms sleep parks the run until an advance resumes it."""
    for _ in range(n):
        ctx.sleep(0.0001)
    return n


# The llm_overhead benchmark: each ctx.llm call's duration, and what runs between calls.
llm_times: list[float] = []
on_llm_call = None


@agent(name="bench.llm_calls")
def llm_calls(ctx: RunContext, n: int, max_tokens: int) -> int:
    for i in range(n):
        if on_llm_call is not None:
            on_llm_call()  # the bare client call, between two of ours (not recorded)
        started = time.perf_counter()
        ctx.llm([{"role": "user", "content": f"Go {i}."}], max_tokens=max_tokens)
        llm_times.append(time.perf_counter() - started)
    return n


# The console_live benchmark: a run that asks a person n times in a row.
@agent(name="bench.approvals")
def approvals(ctx: RunContext, n: int) -> int:
    approved = 0
    for i in range(n):
        approved += ctx.approve(f"Approval {i}", data={"i": i}).approved
    return approved
