"""A run and its journal: the steps it recorded, its events and the signals sent to it."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from agentflow._querysets import RunQuerySet
from agentflow.models.sealing import reveal


class Run(models.Model):
    """One execution of an agent, pinned to the agent version it started on."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        WAITING = "waiting"
        PAUSED = "paused"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.PENDING, Status.RUNNING, Status.WAITING)
    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.CharField(max_length=200, db_index=True)
    agent_version = models.CharField(max_length=50)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    input = models.JSONField(default=dict, blank=True)
    # The real input, encrypted, where redaction changed the stored copy.
    sealed_input = models.TextField(null=True, blank=True, editable=False)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(
        null=True, blank=True, help_text="type, message, position and traceback of a failure"
    )
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="agentflow_runs",
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    # The beat schedule that started this run (agentflow.schedule), if one did.
    schedule = models.ForeignKey(
        "django_celery_beat.PeriodicTask",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="agentflow_runs",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Why a waiting run waits, for people; the machine reads wake_at and the steps.
    wait_reason = models.CharField(max_length=500, blank=True, default="")
    # When the run must be advanced again at the latest (timer, timeout, retry).
    wake_at = models.DateTimeField(null=True, blank=True)
    # The lease: only the holder of the current token may write the run's steps.
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_token = models.BigIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Bumped by anyone who wants the run advanced; the lease holder re-runs if it moved.
    wake_seq = models.BigIntegerField(default=0)
    # Last event sequence number handed out for this run.
    event_seq = models.BigIntegerField(default=0)
    # When the reconciler last sent this run a wake-up, so it does not flood the queue.
    nudged_at = models.DateTimeField(null=True, blank=True)
    has_own_budget = models.BooleanField(
        default=False,
        help_text="set when the run starts with a budget of its own, so runs without one "
        "skip the budget query",
    )

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("cancel_run", "Can cancel runs"),
            ("resume_run", "Can resume paused runs and retry failed ones"),
            ("fork_run", "Can fork runs from a step"),
            ("start_run", "Can start runs"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="agentflow_run_unique_idempotency_key",
            )
        ]
        indexes = [
            models.Index(fields=["status", "wake_at"], name="agentflow_run_wake"),
            models.Index(fields=["status", "lease_expires_at"], name="agentflow_run_lease"),
        ]

    def __str__(self) -> str:
        return f"{self.agent} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        """True once the run can change no more."""
        return self.status in self.TERMINAL

    @property
    def real_input(self) -> dict:
        """The input the agent is called with (unredacted)."""
        return reveal(self.input, self.sealed_input)


class StepStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SCHEDULED = "scheduled"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# A child waiting for its approval is open too: the fan-out is not complete without it.
# Module-level because the open-child partial index below is built from it.
OPEN_STEP_STATUSES = (
    StepStatus.PENDING,
    StepStatus.SCHEDULED,
    StepStatus.RUNNING,
    StepStatus.WAITING,
)


class StepKind(models.TextChoices):
    """What a step records: the ``ctx`` operation that made it (no ``choices`` on the column)."""

    STEP = "step"
    CALL = "call"
    MAP = "map"
    PARALLEL = "parallel"
    LLM = "llm"
    APPROVAL = "approval"
    WAIT = "wait"
    SLEEP = "sleep"
    EMIT = "emit"
    PATCH = "patch"
    NOW = "now"
    RANDOM = "random"
    UUID = "uuid"


class Step(models.Model):
    """One recorded operation of a run at a position (and child index in a fan-out)."""

    Status = StepStatus
    Kind = StepKind

    OPEN = OPEN_STEP_STATUSES
    # Open, but not waiting: a worker has or will soon have it.
    IN_FLIGHT = (Status.PENDING, Status.SCHEDULED, Status.RUNNING)
    # A worker may claim it (now, or at its wake_at).
    CLAIMABLE = (Status.PENDING, Status.SCHEDULED)
    FINISHED = (Status.SUCCEEDED, Status.FAILED)
    # The fan-outs, whose children are steps of their own (a routed call is a one-child one).
    FAN_OUTS = (Kind.MAP, Kind.PARALLEL)

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField()
    index = models.PositiveIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=16)
    name = models.CharField(max_length=300)
    status = models.CharField(max_length=16, choices=Status.choices)
    args = models.JSONField(null=True, blank=True)
    args_hash = models.CharField(max_length=32, blank=True, default="")
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    idempotency_key = models.CharField(max_length=300, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When a waiting or scheduled step may continue (timer, timeout, retry backoff).
    wake_at = models.DateTimeField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    # Fan-out child: renewed while it runs, so the reconciler can tell a dead claim.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Fan-out child: when its wake-up message was last sent (lost messages are re-sent).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # A rate-limit slot booked for this call: at that time it runs without asking again.
    rate_slot = models.DateTimeField(null=True, blank=True)
    # Where redaction changed the stored args or output: the real JSON, encrypted, for the
    # tool (a fan-out child's args) and for the agent on replay (the output).
    sealed_args = models.TextField(null=True, blank=True, editable=False)
    sealed_output = models.TextField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["run", "position", "index"]
        indexes = [
            # Only open fan-out children: "is any sibling still open?" is an index probe.
            models.Index(
                fields=["run", "position", "dispatched_at"],
                condition=Q(
                    index__isnull=False,
                    status__in=list(OPEN_STEP_STATUSES),
                ),
                name="agentflow_step_open_child_v2",
            ),
        ]
        constraints = [
            # (run, position, index) is unique; NULL index needs its own partial index
            # because NULLs never collide in a plain unique index.
            models.UniqueConstraint(
                fields=["run", "position"],
                condition=Q(index__isnull=True),
                name="agentflow_step_unique_position",
            ),
            models.UniqueConstraint(
                fields=["run", "position", "index"],
                condition=Q(index__isnull=False),
                name="agentflow_step_unique_child",
            ),
        ]

    def __str__(self) -> str:
        where = self.position if self.index is None else f"{self.position}[{self.index}]"
        return f"#{where} {self.kind} {self.name} ({self.status})"


class EventType(models.TextChoices):
    """agentflow's own event types (``ctx.emit`` adds the agent's; no ``choices`` on the column)."""

    RUN_CREATED = "run.created"
    RUN_STARTED = "run.started"
    RUN_WAITING = "run.waiting"
    RUN_PAUSED = "run.paused"
    RUN_RESUMED = "run.resumed"
    RUN_SUCCEEDED = "run.succeeded"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    RUN_FORKED = "run.forked"
    STEP_STARTED = "step.started"
    STEP_WAITING = "step.waiting"
    STEP_THROTTLED = "step.throttled"
    STEP_RETRYING = "step.retrying"
    STEP_COMPLETED = "step.completed"
    STEP_FAILED = "step.failed"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_DECIDED = "approval.decided"
    SIGNAL_RECEIVED = "signal.received"
    # Ephemeral: a model call's token deltas, streamed and never stored.
    LLM_DELTA = "llm.delta"


class Event(models.Model):
    """A durable, ordered fact about a run: the outbox that live views stream from."""

    Type = EventType

    # The status a run has after each of its events; other run.* events are read from the row.
    STATUS_AFTER = {
        EventType.RUN_CREATED: Run.Status.PENDING,
        EventType.RUN_STARTED: Run.Status.RUNNING,
        EventType.RUN_WAITING: Run.Status.WAITING,
        EventType.RUN_PAUSED: Run.Status.PAUSED,
        EventType.RUN_RESUMED: Run.Status.WAITING,
        EventType.RUN_SUCCEEDED: Run.Status.SUCCEEDED,
        EventType.RUN_FAILED: Run.Status.FAILED,
        EventType.RUN_CANCELLED: Run.Status.CANCELLED,
    }

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=100)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="agentflow_event_unique_seq")
        ]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.type}"


class Signal(models.Model):
    """A message sent to a run with ``agentflow.signal``, consumed by ``ctx.wait_for``."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="signals")
    name = models.CharField(max_length=200)
    data = models.JSONField(null=True, blank=True)
    # The real data, encrypted, where redaction changed the stored copy.
    sealed_data = models.TextField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # The position of the wait_for step that consumed it.
    consumed_position = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["run", "id"]
        indexes = [models.Index(fields=["run", "name", "consumed_position"])]

    def __str__(self) -> str:
        return f"{self.run_id} {self.name}"
