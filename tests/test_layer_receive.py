"""RejoiningReceive's close: a rejoin's group_add never lands after the consumer's discard.

Pure asyncio logic with a layer that blocks its group_add, so the interleaving that leaked
closed channels into groups (seen once on the Redis layer) is reproduced every time.
"""

from __future__ import annotations

import asyncio

import pytest

from agentflow._layer_receive import REJOINED, RejoiningReceive


class BlockingLayer:
    """Records group_add and group_discard in order; group_add waits for ``release``."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.adding = asyncio.Event()
        self.release = asyncio.Event()

    async def group_add(self, group: str, channel: str) -> None:
        self.adding.set()
        await self.release.wait()
        self.calls.append(f"add {group}")

    async def group_discard(self, group: str, channel: str) -> None:
        self.calls.append(f"discard {group}")


async def failing_receive() -> dict:
    raise ConnectionError("the layer's connection was reset")


def test_close_waits_for_a_rejoin_under_way_and_stops_later_ones():
    async def scenario() -> list[str]:
        layer = BlockingLayer()
        receive = RejoiningReceive(failing_receive, layer, "chan", lambda: ["g"])
        rejoining = asyncio.create_task(receive())
        await asyncio.wait_for(layer.adding.wait(), 30)  # its group_add is in flight
        closing = asyncio.create_task(receive.close())
        with pytest.raises(TimeoutError):  # it cannot finish while the add is under way
            await asyncio.wait_for(asyncio.shield(closing), 0.2)
        layer.release.set()
        await asyncio.wait_for(closing, 30)
        await layer.group_discard("g", "chan")  # what the consumer does next
        assert await asyncio.wait_for(rejoining, 30) == {"type": REJOINED}
        # A failure after the close rejoins nothing.
        assert await asyncio.wait_for(receive(), 30) == {"type": REJOINED}
        return layer.calls

    assert asyncio.run(scenario()) == ["add g", "discard g"]
