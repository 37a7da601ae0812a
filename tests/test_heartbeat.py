"""The heartbeat thread outlives a round that fails: a dead heartbeat lets every lease lapse.

Seen in the suite: a test that set a mistyped AGENTFLOW key for a moment made
``conf.setting`` raise inside the heartbeat's loop, outside its guarded calls, and the
thread died with the process's leases still held.
"""

from __future__ import annotations

import logging
import threading

from agentflow._engine.leases import heartbeat
from tests.support import wait_until


class Counted:
    """A renewable that counts its renewals."""

    def __init__(self) -> None:
        self.lost = threading.Event()
        self.renewals = 0

    def renew(self) -> bool:
        self.renewals += 1
        return True


def test_the_heartbeat_keeps_renewing_after_a_round_that_failed(settings, caplog):
    caplog.set_level(logging.ERROR, logger="agentflow.leases")
    settings.AGENTFLOW = {**settings.AGENTFLOW, "LEASE_SECONDS": 0.3}
    lease = Counted()
    with heartbeat.holding(lease):
        wait_until(lambda: lease.renewals >= 2, timeout=30, what="the first renewals")
        thread = heartbeat._thread
        good = settings.AGENTFLOW
        settings.AGENTFLOW = {**good, "LEASE_SECOND": 0.3}  # a typo: unreadable for a moment
        wait_until(
            lambda: not thread.is_alive() or "heartbeat round failed" in caplog.text,
            timeout=30,
            what="a round to fail on the unreadable settings",
        )
        assert thread.is_alive(), "the heartbeat thread died"
        settings.AGENTFLOW = good
        before = lease.renewals
        wait_until(lambda: lease.renewals >= before + 2, timeout=30, what="renewals again")
    assert not lease.lost.is_set()
