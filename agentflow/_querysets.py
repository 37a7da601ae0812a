"""Named questions about runs, used by the reconciler, the admin and the CLI."""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Q


class RunQuerySet(models.QuerySet):
    def needing_wakeup(self, now: datetime, pending_before: datetime) -> RunQuerySet:
        """Runs a lost message or a dead worker left behind.

        - running with an expired lease (its worker died),
        - waiting with a wake-up time that has come (timer, timeout, signal, retry),
        - pending since before ``pending_before`` without a lease (its start message was lost).
        """
        return self.filter(
            Q(status="running", lease_expires_at__lt=now)
            | Q(status="waiting", wake_at__lte=now)
            | Q(status="pending", created_at__lt=pending_before, lease_expires_at__isnull=True)
        )
