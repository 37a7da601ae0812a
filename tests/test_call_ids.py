"""A call's idempotency key and its waiter id: what is written is what is read back."""

import pytest

from agentflow._engine.call_ids import CallKey, Waiter

RUN = "0b8a6f0e-58b5-4d1c-a3a5-0f2b9d8b6c11"


def test_a_call_key_reads_back_as_written_for_calls_and_children():
    assert str(CallKey(RUN, 3)) == f"{RUN}:3"
    assert str(CallKey(RUN, 3, 7)) == f"{RUN}:3:7"
    for key in (CallKey(RUN, 0), CallKey(RUN, 12, 0), CallKey(RUN, 4, 4999)):
        assert CallKey.parse(str(key)) == key


@pytest.mark.parametrize("text", ["", RUN, f"{RUN}:x", f"{RUN}:1:2:3"])
def test_text_that_is_no_call_key_is_refused(text):
    with pytest.raises(ValueError):
        CallKey.parse(text)


def test_a_waiter_reads_back_as_written_and_anything_else_wakes_nothing():
    for waiter in (Waiter.run(RUN), Waiter.child(42, "billing.pay"), Waiter.child(7, "")):
        assert Waiter.parse(str(waiter)) == waiter
    assert Waiter.parse(f"step:42:llm:{'x' * 3}") == Waiter.child(42, "llm:xxx")  # a model alias
    for text in ("", "run:", "step:", "step:x:tool", "job:1", "42"):
        assert Waiter.parse(text) is None
