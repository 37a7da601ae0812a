"""Agents and tools the tests run on real workers.

Every body records an ``Execution`` row so tests can count how often it ran, and
side-effecting tools write a ``SideEffect`` row under their idempotency key.
"""

import os
import threading
import time
from typing import Literal

from django.db import IntegrityError, transaction

from agentflow import (
    PayloadError,
    PolicyDenied,
    RunContext,
    ToolArgumentError,
    ToolError,
    agent,
    tool,
)
from tests.testapp import llm_agents  # noqa: F401  (registers the model-layer tests' agents)
from tests.testapp.models import Call, Execution, Flag, LedgerEntry, SideEffect

# Deployed "code version" of tests.variant; a worker started with another value runs other code.
VARIANT = os.environ.get("AGENTFLOW_TEST_VARIANT", "a")


def executed(key: str) -> int:
    """Record one execution of ``key``; return how many there have been, this one included."""
    Execution.objects.create(key=key, pid=os.getpid())
    return Execution.objects.filter(key=key).count()


def wait_for_flag(name: str, limit: float = 60.0) -> bool:
    """Block until a test sets the flag (bounded, so a broken test cannot hang a worker)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if Flag.objects.filter(name=name).exists():
            return True
        time.sleep(0.05)
    return False


@tool(name="tests.record_effect")
def record_effect(tag: str, *, idempotency_key: str) -> str:
    executed(idempotency_key)
    with transaction.atomic():
        SideEffect.objects.get_or_create(key=idempotency_key, defaults={"tool": "record_effect"})
    return f"{tag}:done"


def square(run_id: str, i: int) -> int:
    executed(f"{run_id}:step:{i}")
    return i * i


def mixed_v0(ctx: RunContext, n: int) -> dict:
    """The version of tests.mixed that old runs were pinned to."""
    return {"v0": [ctx.step(square, str(ctx.run.id), i) for i in range(n)]}


if os.environ.get("AGENTFLOW_TEST_DEPLOY_V0"):  # a worker that still carries version 0
    agent(name="tests.mixed", version="0")(mixed_v0)


@agent(name="tests.mixed", version="1")
def mixed(ctx: RunContext, n: int) -> dict:
    """n positions alternating ctx.step and ctx.call."""
    squares, effects = 0, 0
    for i in range(n):
        if i % 2:
            squares += ctx.step(square, str(ctx.run.id), i)
        else:
            effects += ctx.call(record_effect, tag=f"t{i}") == f"t{i}:done"
    return {"squares": squares, "effects": effects}


@tool(name="tests.slow_effect", retries=2)
def slow_effect(hold: float, *, idempotency_key: str) -> str:
    """Write the side effect first, then (on the first execution only) hold for a long time."""
    count = executed(idempotency_key)
    try:
        with transaction.atomic():
            SideEffect.objects.create(key=idempotency_key, tool="slow_effect")
    except IntegrityError:
        pass  # the earlier attempt already did it: the key makes this attempt a no-op
    if count == 1:
        time.sleep(hold)
    return "slow:done"


@agent(name="tests.crashy")
def crashy(ctx: RunContext, hold: float = 60.0) -> dict:
    before = [ctx.call(record_effect, tag=f"b{i}") for i in range(3)]
    slow = ctx.call(slow_effect, hold=hold)
    after = [ctx.call(record_effect, tag=f"a{i}") for i in range(3)]
    return {"before": before, "slow": slow, "after": after}


@agent(name="tests.sleeper")
def sleeper(ctx: RunContext, seconds: float) -> dict:
    before = ctx.now()
    ctx.call(record_effect, tag="before")
    ctx.sleep(seconds)
    after = ctx.now()
    return {"slept": (after - before).total_seconds()}


@agent(name="tests.waiter")
def waiter(ctx: RunContext, timeout: float | None = None) -> dict:
    try:
        data = ctx.wait_for("go", timeout=timeout)
    except TimeoutError as exc:
        return {"timed_out": str(exc)}
    return {"got": data}


@agent(name="tests.doomed")
def doomed(ctx: RunContext) -> None:
    ctx.step(step_a)
    raise RuntimeError("the agent gave up")


def step_a() -> str:
    return "a"


def step_b() -> str:
    return "b"


@agent(name="tests.variant")
def variant(ctx: RunContext) -> str:
    # Variant b changes the first step, which runs before the wait and is already recorded.
    first = ctx.step(step_a) if VARIANT == "a" else ctx.call(record_effect, tag="changed")
    ctx.wait_for("continue")
    return first + ctx.step(step_b)


@tool(name="tests.typed")
def typed(count: int, label: str, ratio: float = 1.0) -> str:
    executed("typed")
    return f"{label}x{count}"


@agent(name="tests.bad_args")
def bad_args(ctx: RunContext) -> dict:
    try:
        ctx.call(typed, count="many", label="x")
    except ToolArgumentError as exc:
        error = str(exc)
    return {"error": error, "after": ctx.call(typed, count=2, label="ok")}


class Flaky(Exception):
    pass


@tool(name="tests.flaky", retries=3, retry_backoff=0.2)
def flaky(fail_times: int, *, idempotency_key: str) -> int:
    attempt = executed(idempotency_key)
    if attempt <= fail_times:
        raise Flaky(f"attempt {attempt} fails")
    return attempt


@tool(name="tests.fatal", retries=5, non_retryable=(ValueError,))
def fatal(*, idempotency_key: str) -> None:
    executed(idempotency_key)
    raise ValueError("bad data, retrying will not help")


@tool(name="tests.hang", retries=0, timeout=0.5)
def hang(*, idempotency_key: str) -> None:
    executed(idempotency_key)
    time.sleep(30)


@agent(name="tests.retries")
def retries(ctx: RunContext) -> dict:
    result = {"flaky": ctx.call(flaky, fail_times=2)}
    for name, target in (("fatal", fatal), ("hang", hang)):
        try:
            ctx.call(target)
        except ToolError as exc:
            result[name] = {"attempts": exc.attempts, "type": exc.error_type, "message": str(exc)}
    return result


@tool(name="tests.block", retries=0)
def block(flag: str) -> bool:
    executed(f"block:{flag}")
    return wait_for_flag(flag)


@agent(name="tests.cancellable")
def cancellable(ctx: RunContext) -> str:
    ctx.call(block, flag="release")
    for i in range(5):
        ctx.call(record_effect, tag=f"after-cancel-{i}")
    return "finished"


@agent(name="tests.recorded")
def recorded(ctx: RunContext) -> dict:
    """Values that must be identical on replay, and an event of the agent's own."""
    values = {"now": ctx.now().isoformat(), "random": ctx.random(), "uuid": str(ctx.uuid())}
    ctx.emit("progress", {"stage": "values drawn"})
    ctx.wait_for("go")
    return values


# Whether the deployed code carries the "add-b" change (see test_patched_*).
ADD_B = False


@agent(name="tests.patchy")
def patchy(ctx: RunContext) -> list:
    done = [ctx.step(step_a)]
    if ADD_B and ctx.patched("add-b"):
        done.append(ctx.step(step_b))
    ctx.wait_for("go")
    return done


@tool(name="tests.pay", requires_approval=True)
def pay(invoice: str, amount: int, *, idempotency_key: str) -> dict:
    SideEffect.objects.create(key=idempotency_key, tool="tests.pay")
    executed(f"pay:{invoice}:{amount}")
    return {"paid": amount}


@agent(name="tests.payer")
def payer(ctx: RunContext, invoice: str, amount: int) -> dict:
    try:
        return ctx.call(pay, invoice=invoice, amount=amount)
    except PolicyDenied as exc:
        return {"refused": str(exc)}


@tool(name="tests.transfer")
def transfer(amount: str, *, idempotency_key: str) -> str:
    executed(f"transfer:{amount}")
    return amount


@agent(name="tests.transferrer")
def transferrer(ctx: RunContext, amounts: list[str]) -> list:
    results = ctx.map(transfer, [{"amount": amount} for amount in amounts], return_exceptions=True)
    return [str(result) for result in results]


@agent(name="tests.asker")
def asker(ctx: RunContext, timeout: float | None = None, default: str = "reject") -> dict:
    decision = ctx.approve(
        "Raise the limit?",
        data={"limit": 10},
        schema={
            "type": "object",
            "properties": {"limit": {"type": "integer", "minimum": 0}},
            "required": ["limit"],
        },
        timeout=timeout,
        default=default,
    )
    return {
        "approved": decision.approved,
        "data": decision.data,
        "by": decision.by,
        "comment": decision.comment,
        "status": decision.status,
    }


@tool(name="tests.metered", cost="0.05", retries=0)
def metered(i: int, *, idempotency_key: str) -> int:
    SideEffect.objects.create(key=idempotency_key, tool="tests.metered")
    executed(idempotency_key)
    return i


@agent(name="tests.metered_fan")
def metered_fan(ctx: RunContext, n: int) -> int:
    return len(ctx.map(metered, [{"i": i} for i in range(n)]))


@tool(name="tests.forbidden")
def forbidden() -> str:
    executed("forbidden")
    return "ran"


@agent(name="tests.forbidden_agent")
def forbidden_agent(ctx: RunContext) -> dict:
    outcome = {}
    try:
        outcome["call"] = ctx.call(forbidden)
    except PolicyDenied as exc:
        outcome["call"] = f"PolicyDenied: {exc}"
    children = ctx.map(forbidden, [{}, {}], return_exceptions=True)
    outcome["map"] = [str(child) for child in children]
    return outcome


def tick(i: int) -> int:
    return i


@agent(name="tests.runaway")
def runaway(ctx: RunContext) -> None:
    i = 0
    while True:  # a loop that never ends on its own
        ctx.step(tick, i)
        i += 1


@tool(name="tests.leaky", retries=0)
def leaky(token: str, fail: bool = False) -> dict:
    executed(f"leaky:{'real' if token.startswith('sk-') else 'redacted'}")
    if fail:
        raise RuntimeError(f"upstream refused key {token}")
    return {"echo": token, "header": f"Bearer {token}"}


@agent(name="tests.leaky_agent")
def leaky_agent(ctx: RunContext, token: str) -> dict:
    first = ctx.call(leaky, token=token)
    ctx.emit("note", {"token": token, "owner": "ops@example.com"})
    mapped = ctx.map(leaky, [{"token": token}])
    try:
        ctx.call(leaky, token=token, fail=True)
    except ToolError as exc:
        failed = str(exc)
    return {"first": first, "mapped": mapped, "failed": failed, "same": first["echo"] == token}


@tool(name="tests.child_effect")
def child_effect(i: int, pause: float = 0.0, *, idempotency_key: str) -> int:
    """A fan-out child with a side effect under its key (and an optional pause)."""
    executed(idempotency_key)
    SideEffect.objects.get_or_create(key=idempotency_key, defaults={"tool": "child_effect"})
    if pause:
        time.sleep(pause)
    return i * 2


@agent(name="tests.fan")
def fan(ctx: RunContext, n: int, pause: float = 0.0) -> dict:
    doubled = ctx.map(child_effect, [{"i": i, "pause": pause} for i in range(n)])
    return {"doubled": doubled, "after": ctx.step(square, str(ctx.run.id), n)}


@tool(name="tests.maybe_fail", retries=0)
def maybe_fail(i: int) -> int:
    if i % 3 == 0:
        raise ValueError(f"item {i} is bad")
    return i


@agent(name="tests.fan_errors")
def fan_errors(ctx: RunContext, n: int) -> dict:
    slots = ctx.map(maybe_fail, [{"i": i} for i in range(n)], return_exceptions=True)
    shown = [s if isinstance(s, int) else f"{type(s).__name__}: {s}" for s in slots]
    try:
        ctx.map(maybe_fail, [{"i": i} for i in range(n)])
    except ToolError as exc:
        return {"slots": shown, "raised": str(exc)}
    return {"slots": shown, "raised": None}


@agent(name="tests.mixed_parallel")
def mixed_parallel(ctx: RunContext) -> list:
    calls = [
        (typed, {"count": 2, "label": "a"}),
        ("tests.child_effect", {"i": 21}),
        (typed, {"count": "bad", "label": "b"}),
    ]
    results = ctx.parallel(calls, return_exceptions=True)
    return [type(r).__name__ if isinstance(r, Exception) else r for r in results]


def timed(tool_name: str, key: str, hold: float) -> None:
    call = Call.objects.create(tool=tool_name, key=key, started=time.time(), pid=os.getpid())
    if hold:
        time.sleep(hold)
    Call.objects.filter(id=call.id).update(ended=time.time())


@tool(name="tests.rated", rate_limit="20/s")
def rated(i: int, *, idempotency_key: str) -> int:
    timed("tests.rated", idempotency_key, 0)
    return i


@agent(name="tests.rated_fan")
def rated_fan(ctx: RunContext, n: int) -> int:
    return len(ctx.map(rated, [{"i": i} for i in range(n)]))


@tool(name="tests.capped", max_concurrency=3, retries=1)
def capped(hold: float, *, idempotency_key: str) -> None:
    timed("tests.capped", idempotency_key, hold)


@agent(name="tests.capped_fan")
def capped_fan(ctx: RunContext, n: int, hold: float) -> int:
    return len(ctx.map(capped, [{"hold": hold} for _ in range(n)]))


@tool(name="tests.limited")
def limited(i: int, *, idempotency_key: str) -> int:
    """No limits of its own: Policy rows give it some."""
    timed("tests.limited", idempotency_key, 0)
    return i


@agent(name="tests.limited_inline")
def limited_inline(ctx: RunContext, n: int) -> int:
    return sum(ctx.call(limited, i=i) for i in range(n))


def bulky_text(size: int) -> str:
    return "x" * size


@tool(name="tests.bulky", retries=3)
def bulky(size: int) -> str:
    executed(f"bulky:{size}")
    return bulky_text(size)


@agent(name="tests.oversized")
def oversized(ctx: RunContext, size: int) -> dict:
    """Each value over the payload limit is refused where it is made; the run goes on."""
    outcome = {}
    try:
        ctx.step(bulky_text, size)
    except PayloadError as exc:
        outcome["step"] = str(exc)
    try:
        ctx.call(bulky, size=size)
    except ToolError as exc:
        outcome["call"] = str(exc)
    try:
        ctx.emit("note", bulky_text(size))
    except PayloadError as exc:
        outcome["emit"] = str(exc)
    outcome["after"] = ctx.step(bulky_text, 3)
    return outcome


# -----------------------------------------------------------------------------------------
# Claims (tests/test_claims.py and the rewritten tests of issue 8, part 5). These tools
# record what the worker did (started, returned, overlapped), so the tests assert the
# worker's behaviour and not the rows that the public API writes by itself.
# -----------------------------------------------------------------------------------------


@tool(name="tests.claims_hold", retries=0)
def claims_hold(flag: str, *, idempotency_key: str) -> str:
    """Block until the test sets ``flag``; record the start and the return."""
    executed(idempotency_key)
    wait_for_flag(flag)
    executed(f"{idempotency_key}:returned")
    return flag


@tool(name="tests.claims_stoppable", retries=0)
def claims_stoppable(*, idempotency_key: str, stop_requested: threading.Event) -> str:
    """Work until the runtime asks to stop (bounded); record that it was asked."""
    executed(idempotency_key)
    told = stop_requested.wait(60)
    executed(f"{idempotency_key}:{'stopped' if told else 'never told'}")
    return "stopped" if told else "never told"


@agent(name="tests.claims_cancellable")
def claims_cancellable(ctx: RunContext) -> str:
    ctx.call(claims_stoppable)
    for i in range(3):
        ctx.call(record_effect, tag=f"after-cancel-{i}")
    return "finished"


@agent(name="tests.claims_cancellable_fan")
def claims_cancellable_fan(ctx: RunContext) -> str:
    ctx.map(claims_stoppable, [{}, {}])
    for i in range(3):
        ctx.call(record_effect, tag=f"after-cancel-{i}")
    return "finished"


@agent(name="tests.claims_fan_then_wait")
def claims_fan_then_wait(ctx: RunContext, n: int, flag: str) -> dict:
    """A fan-out held open by ``flag``, one step after it, then a wait that parks the run."""
    held = ctx.map(claims_hold, [{"flag": flag} for _ in range(n)])
    after = ctx.step(square, str(ctx.run.id), n)
    ctx.wait_for("go")
    return {"held": held, "after": after}


@tool(name="tests.claims_long", retries=2)
def claims_long(hold: float, *, idempotency_key: str) -> str:
    """Run for ``hold`` seconds (longer than a lease); every execution is recorded."""
    executed(idempotency_key)
    time.sleep(hold)
    SideEffect.objects.get_or_create(key=idempotency_key, defaults={"tool": "claims_long"})
    return "held"


@agent(name="tests.claims_long_steps")
def claims_long_steps(ctx: RunContext, hold: float, children: int = 2) -> dict:
    inline = ctx.call(claims_long, hold=hold)
    mapped = ctx.map(claims_long, [{"hold": hold} for _ in range(children)])
    return {"inline": inline, "mapped": mapped}


@agent(name="tests.claims_deploy")
def claims_deploy(ctx: RunContext, hold: float) -> list:
    done = [ctx.call(record_effect, tag="first"), ctx.call(claims_long, hold=hold)]
    ctx.sleep(0.5)  # the rest needs a new wake-up, which the next worker must take
    return [*done, ctx.call(record_effect, tag="last")]


@tool(name="tests.claims_rated", rate_limit="2/s")
def claims_rated(i: int, *, idempotency_key: str) -> int:
    timed("tests.claims_rated", idempotency_key, 0)
    return i


@agent(name="tests.claims_rated_calls")
def claims_rated_calls(ctx: RunContext, n: int) -> list:
    return [ctx.call(claims_rated, i=i) for i in range(n)]


@tool(name="tests.claims_gated", retries=0)
def claims_gated(flag: str, *, idempotency_key: str) -> str:
    """Hold a concurrency slot until the test sets ``flag``; record start and end."""
    call = Call.objects.create(
        tool="tests.claims_gated", key=idempotency_key, started=time.time(), pid=os.getpid()
    )
    wait_for_flag(flag)
    Call.objects.filter(id=call.id).update(ended=time.time())
    return flag


@agent(name="tests.claims_gated_fan")
def claims_gated_fan(ctx: RunContext, n: int, flag: str) -> list:
    return ctx.map(claims_gated, [{"flag": flag} for _ in range(n)])


@agent(name="tests.claims_gated_fan_b")
def claims_gated_fan_b(ctx: RunContext, n: int, flag: str) -> list:
    return ctx.map(claims_gated, [{"flag": flag} for _ in range(n)])


# -----------------------------------------------------------------------------------------
# Leaks and smaller defects (tests/test_defects.py, issue 8 part 4).
# -----------------------------------------------------------------------------------------


@agent(name="tests.secret_titles")
def secret_titles(ctx: RunContext, token: str) -> dict:
    """Put ``token`` (a secret) in event types and an approval title, then go on."""
    ctx.emit(f"note-{token}", {"n": 1})
    decision = ctx.approve(f"Approve {token}?")
    ctx.emit(f"done-{token}")
    return {"approved": decision.approved}


if VARIANT == "a":

    @tool(name="tests.reshaped", retries=3)
    def reshaped(count: int) -> int:
        executed("reshaped")
        return count

else:  # a later deploy renamed the parameter: arguments recorded before no longer fit

    @tool(name="tests.reshaped", retries=3)
    def reshaped(amount: int) -> int:
        executed("reshaped")
        return amount


@agent(name="tests.reshaped_fan")
def reshaped_fan(ctx: RunContext, n: int) -> list:
    results = ctx.map("tests.reshaped", [{"count": i} for i in range(n)], return_exceptions=True)
    return [f"{type(r).__name__}: {r}" if isinstance(r, Exception) else r for r in results]


# -----------------------------------------------------------------------------------------
# Payloads PostgreSQL or JSON cannot hold (tests/test_payloads.py, issue 8 part 3).
# -----------------------------------------------------------------------------------------

UNSTORABLE = {"nul": "before\x00after", "surrogate": "half of a pair: \ud800"}


def unstorable(kind: str) -> dict:
    """A value whose one bad string sits at ``$.items[1].name``."""
    return {"items": [{"name": "fine"}, {"name": UNSTORABLE[kind]}]}


@agent(name="tests.payload_return")
def payload_return(ctx: RunContext, kind: str) -> dict:
    executed(f"{ctx.run.id}:body")  # counts executions of the agent body: a loop shows here
    return unstorable(kind)


@agent(name="tests.payload_emit")
def payload_emit(ctx: RunContext, kind: str) -> str:
    executed(f"{ctx.run.id}:body")
    ctx.emit("note", unstorable(kind))
    return "emitted"


@tool(name="tests.payload_tool", retries=3, retry_backoff=0.1)
def payload_tool(kind: str, *, idempotency_key: str) -> dict:
    executed(idempotency_key)
    return unstorable(kind)


@agent(name="tests.payload_call")
def payload_call(ctx: RunContext, kind: str) -> dict:
    return ctx.call(payload_tool, kind=kind)


@agent(name="tests.payload_map")
def payload_map(ctx: RunContext, kind: str, n: int) -> list:
    return ctx.map(payload_tool, [{"kind": kind} for _ in range(n)])


SLEEPS = {"huge": 1e12, "enormous": 1e300, "nan": float("nan"), "past": -1e12, "text": "5"}
# Timeouts of the other timers, refused the same way.
TIMEOUTS = {"wait_for": lambda ctx: ctx.wait_for("x", timeout=1e12)}
TIMEOUTS["approve"] = lambda ctx: ctx.approve("ok?", timeout=1e300)


@agent(name="tests.payload_sleep")
def payload_sleep(ctx: RunContext, how: str) -> str:
    executed(f"{ctx.run.id}:body")
    if how in TIMEOUTS:
        TIMEOUTS[how](ctx)
    else:
        ctx.sleep(SLEEPS[how])
    return "slept"


# -- secrets in signal names ------------------------------------------------------------


@agent(name="tests.named_waiter")
def named_waiter(ctx: RunContext, name: str) -> dict:
    return {"got": ctx.wait_for(name)}


# -- recovery ahead of queued tool work --------------------------------------------------


@tool(name="tests.first_hold")
def first_hold(i: int, hold: float, *, idempotency_key: str) -> int:
    """Hold for ``hold`` seconds on the first execution only (the one a test kills)."""
    if executed(idempotency_key) == 1:
        time.sleep(hold)
    return i


@agent(name="tests.held_fan")
def held_fan(ctx: RunContext, n: int, hold: float) -> list:
    return ctx.map(first_hold, [{"i": i, "hold": hold} for i in range(n)])


# -----------------------------------------------------------------------------------------
# Time travel and schedules (tests/test_time_travel.py, tests/test_schedules.py, issue 9).
# -----------------------------------------------------------------------------------------


@tool(name="tests.tt_gated", retries=0)
def tt_gated(flag: str, *, idempotency_key: str) -> str:
    """Fail until the test sets ``flag`` (the operator fixed the cause)."""
    executed(idempotency_key)
    if not Flag.objects.filter(name=flag).exists():
        raise RuntimeError(f"flag {flag} is not set yet")
    return f"{flag}:ok"


@agent(name="tests.tt_retry")
def tt_retry(ctx: RunContext, flag: str) -> dict:
    before = [ctx.call(record_effect, tag=f"before-{i}") for i in range(2)]
    gated = ctx.call(tt_gated, flag=flag)
    after = ctx.call(record_effect, tag="after")
    return {"before": before, "gated": gated, "after": after}


@tool(name="tests.tt_gated_child", retries=0)
def tt_gated_child(i: int, flag: str, *, idempotency_key: str) -> int:
    """A fan-out child: odd ones fail until ``flag`` is set."""
    executed(idempotency_key)
    if i % 2 and not Flag.objects.filter(name=flag).exists():
        raise RuntimeError(f"child {i}: flag {flag} is not set yet")
    return i * 10


@agent(name="tests.tt_fan_retry")
def tt_fan_retry(ctx: RunContext, n: int, flag: str) -> dict:
    first = ctx.call(record_effect, tag="first")
    mapped = ctx.map(tt_gated_child, [{"i": i, "flag": flag} for i in range(n)])
    return {"first": first, "mapped": mapped}


@agent(name="tests.tt_raises")
def tt_raises(ctx: RunContext, flag: str) -> str:
    """Fails in its own code (no failed step) until ``flag`` is set."""
    done = ctx.call(record_effect, tag="once")
    if not Flag.objects.filter(name=flag).exists():
        raise ValueError(f"flag {flag} is not set yet")
    return done


@agent(name="tests.tt_steps")
def tt_steps(ctx: RunContext, n: int, salt: str = "") -> list:
    """n ctx.step positions, each counting its executions under (run, position)."""
    return [ctx.step(tt_count, i, salt) for i in range(n)]


def tt_count(i: int, salt: str) -> str:
    """Its arguments name no run, so a fork's replay of it matches the source's record."""
    executed(f"tt:{salt}:{i}")
    flag = Flag.objects.filter(name=f"tt-salt-{i}").first()
    return f"{i}{salt}" + ("" if flag is None else "+changed")


@agent(name="tests.tt_fan_then_step")
def tt_fan_then_step(ctx: RunContext, n: int, salt: str) -> dict:
    doubled = ctx.map(child_effect, [{"i": i} for i in range(n)])
    return {"sum": sum(doubled), "after": ctx.step(tt_count, n, salt)}


@agent(name="tests.tt_scheduled")
def tt_scheduled(ctx: RunContext, label: str) -> str:
    return ctx.step(step_a) + label


# -- the console in a browser --------------------------------------------------------------


@tool(name="tests.gate", retries=0)
def gate(flag: str, *, stop_requested: threading.Event) -> str:
    """Block until a test sets ``flag`` (or the run is cancelled)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not stop_requested.is_set():
        if Flag.objects.filter(name=flag).exists():
            return flag
        time.sleep(0.05)
    return "stopped"


@agent(name="tests.browser_steps")
def browser_steps(ctx: RunContext, flag: str) -> dict:
    first = ctx.step(square, str(ctx.run.id), 1)
    ctx.call(gate, flag=flag)
    return {"first": first, "last": ctx.step(square, str(ctx.run.id), 2)}


AMOUNT_SCHEMA = {
    "type": "object",
    "properties": {"amount": {"type": "integer"}},
    "required": ["amount"],
}


@agent(name="tests.browser_approval")
def browser_approval(ctx: RunContext, amount: int) -> dict:
    decision = ctx.approve("Pay the invoice?", data={"amount": amount}, schema=AMOUNT_SCHEMA)
    return {"approved": decision.approved, "amount": (decision.data or {}).get("amount")}


HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


@tool(name="tests.hostile", retries=0)
def hostile() -> dict:
    return {"html": HOSTILE}


@agent(name="tests.browser_hostile")
def browser_hostile(ctx: RunContext) -> dict:
    return ctx.call(hostile)


@tool(name="tests.fails_until_flag", retries=0)
def fails_until_flag(flag: str) -> str:
    if not Flag.objects.filter(name=flag).exists():
        raise RuntimeError(f"flag {flag} is not set yet")
    return "fixed"


@agent(name="tests.browser_retry")
def browser_retry(ctx: RunContext, flag: str) -> str:
    ctx.step(square, "browser", 3)  # no run id in its arguments: a fork replays it
    return ctx.call(fails_until_flag, flag=flag)


# -- exactly-once tools on the site's database, and tools on their own queue ---------


def _marks() -> str:
    """Where the tools below leave marks that outlive a rolled-back transaction (files)."""
    return os.environ.get("AGENTFLOW_TEST_MARKS", "/tmp")


def _pay(invoice: str, hold_seconds: float) -> str:
    """Write the ledger row, note the body start in a file, and on request hold before commit.

    A test asks for one hold by creating ``<invoice>.hold``; the hold deletes it, so the
    retry after a crash does not hold again.
    """
    marks = _marks()
    with open(os.path.join(marks, "bodies.log"), "a") as log:
        log.write(f"{invoice}\n")
    LedgerEntry.objects.create(invoice=invoice)
    hold = os.path.join(marks, f"{invoice}.hold")
    if os.path.exists(hold):
        os.remove(hold)
        open(os.path.join(marks, f"{invoice}.written"), "w").close()
        time.sleep(60)  # the test kills the worker here, after the write, before the commit
    time.sleep(hold_seconds)
    return invoice


@tool(name="tests.pay_atomic", atomic=True)
def pay_atomic(invoice: str, hold_seconds: float = 0.0) -> str:
    return _pay(invoice, hold_seconds)


@tool(name="tests.pay_plain")
def pay_plain(invoice: str, hold_seconds: float = 0.0) -> str:
    return _pay(invoice, hold_seconds)


@agent(name="tests.pay_once")
def pay_once(ctx: RunContext, invoice: str, atomic: bool = True) -> str:
    return ctx.call(pay_atomic if atomic else pay_plain, invoice=invoice)


@agent(name="tests.pay_many")
def pay_many(ctx: RunContext, n: int, hold_seconds: float = 0.1) -> int:
    invoices = [{"invoice": f"inv-{i}", "hold_seconds": hold_seconds} for i in range(n)]
    return len(ctx.map(pay_atomic, invoices))


@tool(name="tests.on_side_queue", queue="side")
def on_side_queue(i: int) -> dict:
    name = os.environ.get("AGENTFLOW_TEST_WORKER_NAME", "?")
    executed(f"side:{name}")
    return {"i": i, "worker": name}


@agent(name="tests.side_queue")
def side_queue(ctx: RunContext, n: int) -> dict:
    one = ctx.call(on_side_queue, i=-1)
    many = ctx.map(on_side_queue, [{"i": i} for i in range(n)])
    return {"one": one, "many": many}


def plus_one(i: int) -> int:
    return i + 1


@agent(name="tests.three_steps")
def three_steps(ctx: RunContext) -> int:
    return sum(ctx.step(plus_one, i) for i in range(3))


@agent(name="tests.naps")
def naps(ctx: RunContext, rounds: int) -> list:
    kept = ctx.step(lambda_free_list)
    for _ in range(rounds):
        ctx.sleep(0.001)
    kept.append("changed by the agent")  # must not leak into the next advance's replay
    ctx.sleep(0.001)
    return ctx.step(lambda_free_list)


def lambda_free_list() -> list:
    return ["recorded"]


@agent(name="tests.uses_clock")
def uses_clock(ctx: RunContext) -> str:
    """Wrong on purpose: a tool argument read from the clock differs on replay."""
    ctx.call(record_effect, tag=f"sk-live-4f9a8b7c6d5e4f3a2b1c at {time.time_ns()}")
    ctx.wait_for("go")
    return "done"


@agent(name="tests.traced")
def traced(ctx: RunContext, n: int) -> dict:
    """A step, a tool call and a fan-out: the tracing tests follow each into its span."""
    squared = ctx.step(square, str(ctx.run.id), 3)
    effect = ctx.call(record_effect, tag="traced")
    amounts = ctx.map(transfer, [{"amount": str(i)} for i in range(n)]) if n else []
    return {"squared": squared, "effect": effect, "amounts": amounts}


@tool(name="tests.wire", requires_approval=True)
def wire(amount: int, memo: str, account: str) -> dict:
    """A payment whose memo and account may hold secrets the reviewer sees redacted."""
    executed(f"wire:{amount}:{memo}:{account}")
    return {"amount": amount, "memo": memo, "account": account}


@agent(name="tests.wirer")
def wirer(ctx: RunContext, amount: int, memo: str, account: str) -> dict:
    inline = ctx.call(wire, amount=amount, memo=memo, account=account)
    mapped = ctx.map(wire, [{"amount": amount, "memo": memo, "account": account}])
    return {"inline": inline, "mapped": mapped}


@agent(name="tests.keyed_asker")
def keyed_asker(ctx: RunContext, key: str) -> dict:
    decision = ctx.approve(
        "Raise the limit?",
        data={"limit": 10, "key": key, "keys": [key, "plain"]},
        schema={
            "type": "object",
            "properties": {
                "limit": {"type": "integer"},
                "key": {"type": "string"},
                "keys": {"type": "array"},
            },
        },
    )
    return {"data": decision.data}


# -----------------------------------------------------------------------------------------
# A failed step is never re-run (tests/test_durable_runs.py, issue 20).
# -----------------------------------------------------------------------------------------


@agent(name="tests.fails_then_waits")
def fails_then_waits(ctx: RunContext) -> dict:
    """Catch two tool failures (one not retryable, one after its retries), then wait twice.

    Each signal is a new advance that replays the failed calls from their records.
    """
    outcome = {}
    for name, target, args in (("fatal", fatal, {}), ("flaky", flaky, {"fail_times": 99})):
        try:
            ctx.call(target, **args)
        except ToolError as exc:
            outcome[name] = {"attempts": exc.attempts, "type": exc.error_type, "message": str(exc)}
    for signal in ("first", "second"):
        ctx.wait_for(signal)
    return outcome


# -----------------------------------------------------------------------------------------
# The console's "Start run" form (tests/test_operator_actions.py, issue 21).
# -----------------------------------------------------------------------------------------


@agent(name="tests.start_form")
def start_form(
    ctx: RunContext,
    period: str,
    count: int,
    ratio: float = 0.5,
    dry_run: bool = False,
    mode: Literal["fast", "careful"] = "fast",
    tags: list[str] | None = None,
) -> dict:
    """Echo a typed input back, so a test sees what the form sent."""
    return {
        "period": period, "count": count, "ratio": ratio, "dry_run": dry_run, "mode": mode,
        "tags": tags,
    }  # fmt: skip


# -----------------------------------------------------------------------------------------
# Live console pages (tests/test_console_live.py, issue 21).
# -----------------------------------------------------------------------------------------


@agent(name="tests.live_gated_approval")
def live_gated_approval(ctx: RunContext, flag: str, amount: int) -> dict:
    """Run a step, block on ``flag``, then ask a person: each stage lands on an open page."""
    ctx.step(square, str(ctx.run.id), 4)
    ctx.call(gate, flag=flag)
    decision = ctx.approve("Pay the invoice?", data={"amount": amount}, schema=AMOUNT_SCHEMA)
    return {"approved": decision.approved, "amount": (decision.data or {}).get("amount")}


@agent(name="tests.live_gated_fan")
def live_gated_fan(ctx: RunContext, flag: str, n: int) -> int:
    """Block on ``flag``, then fan out ``n`` children: a flood of events on an open page."""
    ctx.call(gate, flag=flag)
    return len(ctx.map(child_effect, [{"i": i} for i in range(n)]))


# -----------------------------------------------------------------------------------------
# Readable console (tests/test_readable.py, tests/test_browser_readable.py, issue 21).
# -----------------------------------------------------------------------------------------


@tool(
    name="tests.titled_pay",
    requires_approval=True,
    retries=0,
    approval_title="Pay {invoice_id}: {amount}",
)
def titled_pay(invoice_id: str, amount: str, note: dict | None = None) -> dict:
    return {"paid": amount, "invoice": invoice_id}


@agent(name="tests.titled_payer")
def titled_payer(ctx: RunContext, invoice_id: str, amount: str) -> dict:
    return ctx.call(titled_pay, invoice_id=invoice_id, amount=amount)


@agent(name="tests.titled_fan")
def titled_fan(ctx: RunContext, n: int) -> list:
    return ctx.map(titled_pay, [{"invoice_id": f"INV-{i}", "amount": f"{i}.50"} for i in range(n)])


READABLE_SCHEMA = {
    "type": "object",
    "properties": {
        "invoice": {"type": "string", "title": "Invoice number"},
        "amount": {"type": "integer", "title": "Amount (USD)", "description": "whole dollars"},
        "urgent": {"type": "boolean", "title": "Urgent"},
        "lines": {"type": "array", "title": "Invoice lines"},
    },
    "required": ["invoice", "amount"],
}


@agent(name="tests.readable_approval")
def readable_approval(ctx: RunContext, amount: int) -> dict:
    """Ask with labelled, typed and nested data; return what was decided."""
    decision = ctx.approve(
        "Pay the invoice?",
        data={
            "invoice": "INV-2011",
            "amount": amount,
            "urgent": False,
            "lines": [{"sku": "A-1", "qty": 2}, {"sku": "<b>B-2</b>", "qty": 1}],
        },
        schema=READABLE_SCHEMA,
    )
    return {"approved": decision.approved, "amount": (decision.data or {}).get("amount")}


def wide_text(width: int) -> str:
    """One unbroken word ``width`` characters long: the widest thing a page can be given."""
    return "w" * width


@agent(name="tests.wide_approval")
def wide_approval(ctx: RunContext, width: int = 600) -> dict:
    """A long step output, then an approval with a long title and data (the 420 px check)."""
    text = ctx.step(wide_text, width)
    decision = ctx.approve(
        f"Pay INV-{'9' * 60}",
        data={"note": text, "amount": 1, "lines": [{"sku": text[:80], "qty": 2}]},
    )
    return {"approved": decision.approved, "text": text}


# -----------------------------------------------------------------------------------------
# Redaction (tests/test_redaction.py): outputs dense with near-matches of
# the default patterns, and a configured model API key echoed back by a tool and a signal.
# -----------------------------------------------------------------------------------------


def near_misses(size: int) -> str:
    """``size`` characters of long letter and digit runs joined by @ and dots, and no match:
    the email pattern's worst case (each run could start an address that never ends)."""
    block = "a1" * 2000 + "@" + "b2" * 2000 + ".9 " + "sk-" + "c" * 15 + " "
    return (block * (size // len(block) + 1))[:size]


@tool(name="tests.dense", retries=0)
def dense(size: int, *, idempotency_key: str) -> str:
    executed(idempotency_key)
    return near_misses(size)


@agent(name="tests.dense_output")
def dense_output(ctx: RunContext, size: int) -> dict:
    out = ctx.call(dense, size=size)
    return {"length": len(out), "intact": out == near_misses(size)}


@tool(name="tests.echo_key", retries=0)
def echo_key(*, idempotency_key: str) -> dict:
    """What a tool that logs its configuration returns: the model API key, in passing."""
    executed(idempotency_key)
    key = os.environ["AGENTFLOW_TEST_LLM_KEY"]
    return {"log": f"calling the model with key={key}; done", "key": key}


@agent(name="tests.key_echoer")
def key_echoer(ctx: RunContext) -> dict:
    out = ctx.call(echo_key)
    signal = ctx.wait_for("go")
    ctx.emit("note", {"tool": out["log"], "signal": signal})  # streamed live
    key = os.environ["AGENTFLOW_TEST_LLM_KEY"]
    return {"tool_had_key": out["key"] == key, "signal_had_key": key in str(signal)}
