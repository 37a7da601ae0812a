"""``manage.py agentflow``: start, inspect, replay and recover runs from the shell."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Sum

import agentflow
from agentflow import _registry as registry
from agentflow import _retention as retention
from agentflow import embedded
from agentflow._engine import reconciler
from agentflow._engine.serialize import parse
from agentflow.management._exit_codes import ExitCode, exit_code
from agentflow.management._follow import approval_url, follow, pending_approvals
from agentflow.models import Run, Step

# What `start --wait` says as it exits with each code but 0 (see _exit_codes).
WHY_NOT_DONE = {
    ExitCode.FAILED: "failed (exit code 3).",
    ExitCode.CANCELLED: "was cancelled (exit code 4).",
    ExitCode.NEEDS_A_PERSON: "waits for a person: decide its approval, or raise the limit that "
    "paused it and resume it (exit code 5).",
    ExitCode.STILL_GOING: "is still going (exit code 6).",
}


class Command(BaseCommand):
    help = "Start, inspect, replay and recover agentflow runs."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        start = sub.add_parser("start", help="start a run of an agent")
        start.add_argument("agent", help="agent name, as listed by list-agents")
        start.add_argument(
            "--input", default="{}", help="JSON object of arguments, e.g. '{\"n\": 3}'"
        )
        start.add_argument(
            "--idempotency-key", default=None, help="return the existing run for a repeated key"
        )
        start.add_argument(
            "--wait",
            action="store_true",
            help="follow the run's events until it ends; exit 0 if it succeeded, 3 if it "
            "failed, 4 if cancelled, 5 if it waits for a person or is paused, 6 if --timeout "
            "ran out",
        )
        start.add_argument(
            "--timeout", type=float, default=600.0, help="seconds to follow (default 600)"
        )

        status = sub.add_parser("status", help="show a run, its last steps and its outcome")
        status.add_argument("run", help="run id")
        status.add_argument("--steps", type=int, default=10, help="how many recent steps to show")

        replay = sub.add_parser("replay", help="check deployed code against a run's history")
        replay.add_argument("run", help="run id")

        for verb in ("approve", "reject"):
            decide = sub.add_parser(verb, help=f"{verb} a pending approval, as a user")
            decide.add_argument("approval", type=int, help="approval id (start --wait prints it)")
            decide.add_argument(
                "--as", dest="username", required=True, help="the deciding user's username"
            )
            decide.add_argument("--comment", default="", help="why, kept with the decision")
            if verb == "approve":
                decide.add_argument(
                    "--data", default=None, help="JSON the reviewer edited, if the request asks"
                )

        prune = sub.add_parser("prune", help="delete old finished runs and what they recorded")
        prune.add_argument(
            "--older-than", required=True, help="age of the runs to delete: 30d, 12h, 90m, 2w"
        )
        prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
        prune.add_argument("--batch", type=int, default=200, help="runs per transaction")

        sub.add_parser(
            "recover", help="wake runs left by dead workers, lost messages or due timers"
        )
        sub.add_parser("list-agents", help="list registered agents and tools")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            getattr(self, "do_" + action.replace("-", "_"))(**options)
        except (agentflow.AgentflowError, PermissionDenied) as exc:
            raise CommandError(str(exc) or "permission denied") from exc

    # -- actions ----------------------------------------------------------------------

    def do_start(
        self,
        *,
        agent: str,
        input: str,
        idempotency_key: str | None,
        wait: bool,
        timeout: float,
        **_: Any,
    ) -> None:
        try:
            value = parse(input, what="--input")
        except agentflow.PayloadError as exc:
            raise CommandError(
                f'{exc} Pass an object, e.g. --input \'{{"period": "2026-10"}}\'.'
            ) from None
        if not isinstance(value, dict):
            raise CommandError(
                f"--input must be a JSON object of named arguments, not {type(value).__name__}."
            )
        in_process = wait and embedded.is_embedded()
        with embedded.worker() if in_process else contextlib.nullcontext():
            run = agentflow.start(agent, value, idempotency_key=idempotency_key)
            self.stdout.write(
                f"run {run.id} ({run.agent} version {run.agent_version}): {run.status}"
            )
            if not wait:
                if embedded.is_embedded():
                    self.stdout.write(
                        "The broker is in-memory: a running `manage.py demo` (or "
                        "`agentflow start --wait`) process picks this run up."
                    )
                return
            run = follow(run, self.stdout.write, timeout)
        self._outcome(run)
        code = exit_code(run, waiting_for_a_person=bool(pending_approvals(run)))
        if code != ExitCode.SUCCEEDED:
            raise CommandError(f"run {run.id} {WHY_NOT_DONE[code]}", returncode=code)

    def do_status(self, *, run: str, steps: int, **_: Any) -> None:
        current = agentflow.get_run(run)
        self.stdout.write(
            f"run {current.id}\n  agent   {current.agent} version {current.agent_version}"
        )
        self.stdout.write(
            f"  status  {current.status}"
            + (f" ({current.wait_reason})" if current.wait_reason else "")
        )
        self.stdout.write(
            f"  created {current.created_at:%Y-%m-%d %H:%M:%S}  steps {current.steps.count()}"
        )
        spent = current.steps.aggregate(
            input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"), cost=Sum("cost")
        )
        if spent["input_tokens"] or spent["output_tokens"]:
            self.stdout.write(
                f"  tokens  {spent['input_tokens']} in, {spent['output_tokens']} out  "
                f"cost ${spent['cost'].normalize():f}"
            )
        recent = list(current.steps.order_by("-position", "-index")[:steps])
        for step in reversed(recent):
            usage = ""
            if step.kind == Step.Kind.LLM:
                usage = f"  tokens={step.input_tokens}/{step.output_tokens} cost=${step.cost:f}"
            self.stdout.write(f"    {step}  attempts={step.attempts}{usage}")
        self._outcome(current)

    def do_approve(
        self, *, approval: int, username: str, comment: str, data: str | None, **_: Any
    ) -> None:
        edited = None
        if data is not None:
            try:
                edited = json.loads(data)
            except ValueError as exc:
                raise CommandError(f"--data is not JSON: {exc}") from exc
        decided = agentflow.approve(approval, by=self._user(username), data=edited, comment=comment)
        self.stdout.write(f"approval {decided.id} approved by {username}: run {decided.run_id}")

    def do_reject(self, *, approval: int, username: str, comment: str, **_: Any) -> None:
        decided = agentflow.reject(approval, by=self._user(username), comment=comment)
        self.stdout.write(f"approval {decided.id} rejected by {username}: run {decided.run_id}")

    def _user(self, username: str) -> Any:
        from django.contrib.auth import get_user_model

        model = get_user_model()
        user = model.objects.filter(**{model.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"there is no user named {username!r}")
        return user

    def do_prune(self, *, older_than: str, dry_run: bool, batch: int, **_: Any) -> None:
        age = retention.parse_age(older_than)
        if batch < 1:
            raise CommandError("--batch must be 1 or more")
        started = time.monotonic()
        if dry_run:
            report = retention.prune(age, dry_run=True)
            self.stdout.write(f"would delete {report}")
            return

        def progress(report: retention.Pruned) -> None:
            self.stdout.write(
                f"  deleted {report.runs} runs so far ({time.monotonic() - started:.1f}s)"
            )

        self.stdout.write(f"deleting runs that finished more than {older_than} ago...")
        report = retention.prune(age, batch=batch, progress=progress)
        self.stdout.write(f"deleted {report} in {time.monotonic() - started:.1f}s")

    def do_replay(self, *, run: str, **_: Any) -> None:
        report = agentflow.replay(run)
        self.stdout.write(str(report))
        if not report.ok:
            raise CommandError("replay found mismatches")

    def do_recover(self, **_: Any) -> None:
        started = time.monotonic()
        self.stdout.write("looking for runs to recover...")
        woken = reconciler.reconcile_exclusively()  # the fleet's lock, as the task takes it
        if woken is None:
            self.stdout.write(
                "another process is reconciling right now, so this pass did nothing; "
                "it wakes what needs waking (run this again to check when it is done)"
            )
            return
        total = sum(woken.values())
        detail = ", ".join(f"{n} {status}" for status, n in sorted(woken.items())) or "none needed"
        self.stdout.write(f"woke {total} run(s): {detail} ({time.monotonic() - started:.2f}s)")

    def do_list_agents(self, **_: Any) -> None:
        agents = registry.agents()
        self.stdout.write(f"{len(agents)} agent version(s):")
        for definition in agents:
            fields = ", ".join(definition.input_model.model_fields) or "-"
            self.stdout.write(f"  {definition.name}  version {definition.version}  input: {fields}")
        tools = registry.tools()
        self.stdout.write(f"{len(tools)} tool(s):")
        for definition in tools:
            self.stdout.write(
                f"  {definition.name}  retries={definition.retries} timeout={definition.timeout}"
            )

    # -- output -----------------------------------------------------------------------

    def _outcome(self, run: Run) -> None:
        if run.status == Run.Status.SUCCEEDED:
            self.stdout.write(
                self.style.SUCCESS("output: " + json.dumps(run.output, indent=2, default=str))
            )
        elif run.status == Run.Status.FAILED:
            error = run.error or {}
            self.stdout.write(
                self.style.ERROR(f"error: {error.get('type')}: {error.get('message')}")
            )
        for approval in pending_approvals(run):
            self.stdout.write(
                self.style.WARNING(
                    f"waiting for approval {approval.id}: {approval.title}. Decide it in the "
                    f"admin ({approval_url(approval)}) or with agentflow.approve() / "
                    "agentflow.reject()."
                )
            )
