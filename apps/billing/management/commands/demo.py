"""``manage.py demo``: run the demo agent on the embedded stack, then serve the admin."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django_celery_beat.models import PeriodicTask

import agentflow
from agentflow import embedded
from agentflow.management._follow import approval_url, follow, pending_approvals
from agentflow.models import Run

SCHEDULE = "demo: billing.reconcile monthly"
# Each demo run spends at most this much on model calls (PRICES of the configured model).
BUDGET = {"max_cost": "0.50"}
BRIEF_TOPIC = "durable execution and replay"


class Command(BaseCommand):
    help = (
        "Run the example agents (billing.reconcile, then research.brief) with an in-process "
        "worker, then serve the site."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="exit after the demo run")
        parser.add_argument("--addr", default="127.0.0.1:8000", help="address to serve on")
        parser.add_argument("--period", default="2026-10", help="invoice period to reconcile")

    def handle(self, *args: Any, once: bool, addr: str, period: str, **options: Any) -> None:
        user = self._admin_user()
        with embedded.worker() if embedded.is_embedded() else contextlib.nullcontext():
            self._schedule(period, user)
            billing = self._reconcile(period, user, once)
            self.stdout.write(f"starting research.brief on {BRIEF_TOPIC!r}...")
            brief = agentflow.start("research.brief", {"topic": BRIEF_TOPIC}, owner=user)
            brief = follow(brief, self.stdout.write, timeout=120)
            self._report(brief)
            self.stdout.write(brief.output["brief"])
            if once:
                return
            for approval in pending_approvals(billing):
                self.stdout.write(
                    f"billing.reconcile waits for approval: {approval.title}; approve or reject "
                    f"it at http://{addr}{approval_url(approval)}"
                )
            self._serve(addr)

    def _reconcile(self, period: str, user: Any, once: bool) -> Run:
        """Run billing.reconcile until it finishes, or (without --once) waits for a person."""
        self.stdout.write(f"starting billing.reconcile for {period}...")
        run = agentflow.start("billing.reconcile", {"period": period}, owner=user, budget=BUDGET)
        run = follow(run, self.stdout.write, timeout=120)
        while pending_approvals(run):
            if not once:
                return run  # a person decides it in the admin, which serves next
            for approval in pending_approvals(run):
                self.stdout.write(f"waiting for approval: {approval.title}")
                self.stdout.write("  --once: approved by the demo's admin user")
                agentflow.approve(approval, by=user, comment="approved by manage.py demo --once")
            run = follow(run, self.stdout.write, timeout=120)
        self._report(run)
        return run

    def _report(self, run: Run) -> None:
        self.stdout.write(f"run {run.id} {run.status}")
        self.stdout.write("output: " + json.dumps(run.output, indent=2))
        if run.status != run.Status.SUCCEEDED:
            raise SystemExit(1)

    def _serve(self, addr: str) -> None:
        """Serve the site (the in-process worker keeps running runs meanwhile)."""
        self.stdout.write(f"admin: http://{addr}/admin/  (user admin, password admin)")
        call_command("runserver", addr, use_reloader=False)

    def _schedule(self, period: str, user: Any) -> None:
        """One recurring run for the admin's Periodic tasks page (made once)."""
        if not PeriodicTask.objects.filter(name=SCHEDULE).exists():
            agentflow.schedule(
                "billing.reconcile",
                {"period": period},
                crontab="0 6 1 * *",
                name=SCHEDULE,
                owner=user,
                budget=BUDGET,
            )
            self.stdout.write(f"scheduled '{SCHEDULE}': billing.reconcile at 06:00 on the 1st")

    def _admin_user(self) -> Any:
        users = get_user_model()
        user = users.objects.filter(username="admin").first()
        if user is None:
            user = users.objects.create_superuser("admin", "admin@example.com", "admin")
            self.stdout.write("created the admin user (admin / admin)")
        return user
