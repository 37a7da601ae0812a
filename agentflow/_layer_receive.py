"""Receiving from the channel layer through its failures, so that a socket outlives them.

channels' ``AsyncConsumer`` awaits ``channel_layer.receive`` in its dispatch loop and lets an
error from it end the consumer: the server closes the socket with 1011, and ``disconnect``
never runs, so the consumer's group memberships stay in Redis. A Redis restart, a reset
connection or a read timeout would drop every operator watching a page.

``RejoiningReceive`` wraps that receive. When it fails, it waits (backing off, with jitter,
from ``FIRST_BACKOFF`` up to ``MAX_BACKOFF``), adds the channel to its groups again (a
restarted Redis has forgotten them) and returns a ``REJOINED`` message. The consumer
dispatches it like any other message, in order with them, and reads back what it may have
missed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

# The message type a consumer receives after the layer failed and its groups were rejoined.
REJOINED = "agentflow.rejoined"
# Seconds to wait after a failure before rejoining, doubled after each failure in a row (a
# receive that fails at once again, or a rejoin that fails), so a layer that stays down is
# not hammered.
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0

# Seconds a closing consumer waits for a rejoin under way before it leaves its groups.
CLOSE_WAIT = 5.0

Message = dict[str, Any]


class RejoiningReceive:
    """A channel layer receive that rejoins ``groups()`` when the layer fails, never raising.

    Cancellation (the consumer going away) still ends it.
    """

    def __init__(
        self,
        receive: Callable[[], Awaitable[Message]],
        layer: Any,
        channel: str,
        groups: Callable[[], Iterable[str]],
    ) -> None:
        self._receive, self._layer, self._channel, self._groups = receive, layer, channel, groups
        self._backoff = FIRST_BACKOFF
        self._adding = asyncio.Lock()  # held while a rejoin's group_add calls are under way
        self._closed = False

    async def __call__(self) -> Message:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            message = await self._receive()
        except Exception as exc:
            if loop.time() - started > MAX_BACKOFF:
                self._backoff = FIRST_BACKOFF  # a failure after a while: not one in a row
            logger.warning(
                "the channel layer failed for %s (%s: %s); rejoining its groups",
                self._channel,
                type(exc).__name__,
                exc,
            )
        else:
            self._backoff = FIRST_BACKOFF
            return message
        await self._rejoin()
        return {"type": REJOINED}

    async def _rejoin(self) -> None:
        """Add the channel to its groups again, waiting longer after each failed attempt."""
        while True:
            await asyncio.sleep(self._backoff * random.uniform(0.5, 1.0))
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
            try:
                async with self._adding:
                    if self._closed:
                        return
                    for group in self._groups():
                        await self._layer.group_add(group, self._channel)
            except Exception as exc:
                logger.debug("rejoining %s failed: %s", self._channel, exc)
            else:
                return

    async def close(self) -> None:
        """Rejoin no more, and wait (``CLOSE_WAIT`` at most) for a rejoin under way.

        A consumer calls it before it leaves its groups: a group_add still in flight could
        otherwise reach Redis after the group_discard and leave the closed channel listed.
        """
        self._closed = True
        try:
            await asyncio.wait_for(self._adding.acquire(), CLOSE_WAIT)
        except TimeoutError:
            logger.warning("a rejoin of %s is still under way as it closes", self._channel)
        else:
            self._adding.release()
