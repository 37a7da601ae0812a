"""Where fleet-wide limits live: Redis in production, this process in the embedded default.

Two primitives, shaped like a small ``django.tasks``-style backend:

- ``reserve(key, interval, count, lead)``: evenly spaced slots (the generic cell rate
  algorithm with a bucket of one). Each call books the next ``count`` free slots (no
  earlier than ``lead`` seconds from now), ``interval`` seconds apart, and is told how
  long until the first. A caller over the limit is scheduled for
  its own slot instead of polling, and callers get consecutive slots, so nobody retries
  in a herd. N calls per period are spaced period / N apart, so no window of the period
  ever holds more than N starts.
- ``acquire/release/renew``: concurrency slots as leases that expire, so a holder that
  dies gives its slot back after one lease. A caller refused a slot is queued as a
  waiter; ``release`` hands back the waiters to wake, oldest first.
- ``announce/fleet_slots``: a census of the worker processes, each counted for as long as
  it keeps announcing itself, so a fan-out knows how many tasks the fleet runs at once.
- ``take_turn(key, seconds)``: True for one caller per ``seconds``, fleet-wide.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from agentflow import conf


@dataclass(frozen=True)
class Refused:
    """A concurrency slot was not free; retry after ``retry_in`` seconds at the latest."""

    retry_in: float


class BaseLimitStore:
    def reserve(self, key: str, interval: float, count: int = 1, lead: float = 0.0) -> float:
        """Book the next ``count`` slots, none before ``lead`` s from now; return seconds
        from now until the first (0 when it is now)."""
        raise NotImplementedError

    def acquire(
        self, key: str, capacity: int, holder: str, lease: float, waiter: str
    ) -> Refused | None:
        """Take a slot for ``holder`` (None), or queue ``waiter`` and say when to retry."""
        raise NotImplementedError

    def release(self, key: str, capacity: int, holder: str) -> list[str]:
        """Free ``holder``'s slot; return the waiters to wake for the slots now free."""
        raise NotImplementedError

    def renew(self, key: str, holder: str, lease: float) -> bool:
        """Extend ``holder``'s lease; False if it already expired."""
        raise NotImplementedError

    def sweep(self) -> list[str]:
        """Drop expired slots everywhere and return the waiters the freed slots admit.

        A holder that died never calls ``release``; the reconciler calls this instead.
        """
        raise NotImplementedError

    def announce(self, member: str, slots: int, ttl: float) -> None:
        """Count ``member``, a worker process running ``slots`` tasks at once, for ``ttl`` s."""
        raise NotImplementedError

    def fleet_slots(self) -> int | None:
        """Tasks the live fleet runs at once; None when this store cannot see the fleet."""
        raise NotImplementedError

    def take_turn(self, key: str, seconds: float) -> bool:
        """True for the first caller in each ``seconds``; the others are told to skip."""
        raise NotImplementedError


RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval, count, lead = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local slot = math.max(now + lead, tonumber(redis.call('GET', KEYS[1]) or '0'))
local after = slot + interval * count
redis.call('SET', KEYS[1], after, 'PX', math.ceil((after - now) / 1000) + 1000)
return slot - now
"""

ACQUIRE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local capacity, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < capacity then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], lease + 60000)
  redis.call('ZREM', KEYS[2], ARGV[4])
  return -1
end
redis.call('ZADD', KEYS[2], 'NX', now, ARGV[4])
redis.call('PEXPIRE', KEYS[2], 86400000)
redis.call('HSET', KEYS[3], ARGV[5], capacity)
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tonumber(first[2]) - now
"""

RELEASE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local free = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
if free <= 0 then return {} end
local woken = redis.call('ZRANGE', KEYS[2], 0, free - 1)
if #woken > 0 then redis.call('ZREM', KEYS[2], unpack(woken)) end
return woken
"""

RENEW = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  return 1
end
return 0
"""

ANNOUNCE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 60000)
"""

FLEET_SLOTS = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local total = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  total = total + tonumber(string.match(member, '(%d+)$'))
end
return total
"""

FLEET = "agentflow:fleet"  # sorted set: "<process>/<slots>" -> when its announcement expires
WAITING = "agentflow:waiting"  # hash: limit key -> capacity, for keys with waiters


class RedisLimitStore(BaseLimitStore):
    """Limits in Redis, each decision one atomic Lua script on Redis's own clock."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self._reserve = self.client.register_script(RESERVE)
        self._acquire = self.client.register_script(ACQUIRE)
        self._release = self.client.register_script(RELEASE)
        self._renew = self.client.register_script(RENEW)
        self._announce = self.client.register_script(ANNOUNCE)
        self._fleet_slots = self.client.register_script(FLEET_SLOTS)

    def reserve(self, key: str, interval: float, count: int = 1, lead: float = 0.0) -> float:
        micros = self._reserve(
            keys=[f"agentflow:rate:{key}"],
            args=[int(interval * 1_000_000), count, int(lead * 1_000_000)],
        )
        return micros / 1_000_000

    def acquire(
        self, key: str, capacity: int, holder: str, lease: float, waiter: str
    ) -> Refused | None:
        wait = self._acquire(
            keys=[f"agentflow:slots:{key}", f"agentflow:waiters:{key}", WAITING],
            args=[capacity, int(lease * 1000), holder, waiter, key],
        )
        return None if wait < 0 else Refused(max(wait, 0) / 1000)

    def release(self, key: str, capacity: int, holder: str) -> list[str]:
        woken = self._release(
            keys=[f"agentflow:slots:{key}", f"agentflow:waiters:{key}"], args=[capacity, holder]
        )
        return [w.decode() for w in woken]

    def renew(self, key: str, holder: str, lease: float) -> bool:
        return bool(self._renew(keys=[f"agentflow:slots:{key}"], args=[holder, int(lease * 1000)]))

    def sweep(self) -> list[str]:
        woken: list[str] = []
        for raw_key, capacity in self.client.hgetall(WAITING).items():
            key = raw_key.decode()
            woken += self.release(key, int(capacity), "")
            if not self.client.zcard(f"agentflow:waiters:{key}"):
                self.client.hdel(WAITING, key)
        return woken

    def announce(self, member: str, slots: int, ttl: float) -> None:
        self._announce(keys=[FLEET], args=[f"{member}/{slots}", int(ttl * 1000)])

    def fleet_slots(self) -> int | None:
        return int(self._fleet_slots(keys=[FLEET]))

    def take_turn(self, key: str, seconds: float) -> bool:
        return bool(self.client.set(f"agentflow:turn:{key}", 1, nx=True, px=int(seconds * 1000)))


class MemoryLimitStore(BaseLimitStore):
    """The same semantics inside one process, for the embedded default (no Redis)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._holders: dict[str, dict[str, float]] = {}
        self._waiters: dict[str, dict[str, float]] = {}
        self._capacity: dict[str, int] = {}
        self._turns: dict[str, float] = {}

    def reserve(self, key: str, interval: float, count: int = 1, lead: float = 0.0) -> float:
        with self._lock:
            now = time.time()
            slot = max(now + lead, self._next.get(key, 0.0))
            self._next[key] = slot + interval * count
            return slot - now

    def acquire(
        self, key: str, capacity: int, holder: str, lease: float, waiter: str
    ) -> Refused | None:
        with self._lock:
            now = time.time()
            holders = {h: t for h, t in self._holders.get(key, {}).items() if t > now}
            self._holders[key] = holders
            waiters = self._waiters.setdefault(key, {})
            if holder in holders or len(holders) < capacity:
                holders[holder] = now + lease
                waiters.pop(waiter, None)
                return None
            waiters.setdefault(waiter, now)
            self._capacity[key] = capacity
            return Refused(max(min(holders.values()) - now, 0))

    def release(self, key: str, capacity: int, holder: str) -> list[str]:
        with self._lock:
            now = time.time()
            holders = {
                h: t for h, t in self._holders.get(key, {}).items() if t > now and h != holder
            }
            self._holders[key] = holders
            waiters = self._waiters.get(key, {})
            woken = sorted(waiters, key=waiters.get)[: max(capacity - len(holders), 0)]
            for waiter in woken:
                del waiters[waiter]
            return woken

    def renew(self, key: str, holder: str, lease: float) -> bool:
        with self._lock:
            holders = self._holders.get(key, {})
            if holder not in holders:
                return False
            holders[holder] = time.time() + lease
            return True

    def sweep(self) -> list[str]:
        woken: list[str] = []
        for key, capacity in list(self._capacity.items()):
            woken += self.release(key, capacity, "")
        return woken

    def announce(self, member: str, slots: int, ttl: float) -> None:
        """Nothing to do: other processes could not read it."""

    def fleet_slots(self) -> int | None:
        return None  # this process sees only itself, not the fleet

    def take_turn(self, key: str, seconds: float) -> bool:
        with self._lock:
            now = time.time()
            if self._turns.get(key, 0.0) > now:
                return False
            self._turns[key] = now + seconds
            return True


def redis_url() -> str | None:
    """``AGENTFLOW["REDIS_URL"]``, else the Celery broker when it is Redis, else None.

    The broker as Django's settings name it: the gates know nothing of Celery's app (a
    broker set in ``celery.py`` alone is flagged by ``agentflow.W005``).
    """
    from django.conf import settings

    url = conf.setting("REDIS_URL") or getattr(settings, "CELERY_BROKER_URL", "") or ""
    return url if url.startswith(("redis://", "rediss://", "unix://")) else None


@cache
def _store(url: str | None) -> BaseLimitStore:
    return RedisLimitStore(url) if url else MemoryLimitStore()


def limit_store() -> Any:
    """The limit store for this process's configuration."""
    return _store(redis_url())
