"""Field errors for Policy, Budget and Approval rows, shown by admin forms and full_clean().

Each function returns ``{field: message}``; the models raise them as a ValidationError.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from agentflow.models.conditions import ConditionError, validate
from agentflow.models.matching import validate_glob
from agentflow.models.patterns import problem as pattern_problem


def _globs(row: Any, fields: tuple[str, ...], errors: dict[str, str]) -> None:
    for field in fields:
        try:
            validate_glob(getattr(row, field))
        except ValueError as exc:
            errors[field] = str(exc)


def policy_errors(policy: Any) -> dict[str, str]:
    from agentflow._definitions import parse_rate

    errors: dict[str, str] = {}
    _globs(policy, ("tool", "agent"), errors)
    if policy.rate_limit:
        try:
            parse_rate(policy.rate_limit)
        except ValueError as exc:
            errors["rate_limit"] = str(exc)
    if policy.max_concurrency == 0:
        errors["max_concurrency"] = "must be 1 or more; leave blank to keep the tool's own limit"
    if policy.max_steps == 0:
        errors["max_steps"] = "must be 1 or more; leave blank for no loop guard"
    if policy.max_duration is not None and policy.max_duration.total_seconds() <= 0:
        errors["max_duration"] = "must be longer than zero; leave blank for no limit"
    if policy.condition:
        if policy.effect not in ("deny", "approve", "allow"):
            errors["condition"] = "a condition needs an effect (allow, deny or approve)"
        try:
            validate(policy.condition)
        except ConditionError as exc:
            errors["condition"] = f"{policy.condition!r} {exc}"
    for number, line in enumerate(policy.redact_patterns, 1):
        why = pattern_problem(line)  # RE2's syntax: what it refuses, and why
        if why is not None:
            errors["redact"] = f"line {number}: {why}"
            break
    rules = (
        policy.effect,
        policy.rate_limit,
        policy.max_concurrency,
        policy.max_steps,
        policy.max_duration,
        policy.redact_patterns,
    )
    if not any(rule not in (None, "", []) for rule in rules) and not errors:
        errors["effect"] = (
            "the policy does nothing: set an effect, a rate limit, a concurrency limit, "
            "a loop guard (max steps), a max duration or redaction patterns"
        )
    return errors


def budget_errors(budget: Any) -> dict[str, str]:
    errors: dict[str, str] = {}
    _globs(budget, ("agent",), errors)
    for field in budget.LIMITS:
        value = getattr(budget, field)
        # A value its field could not read (text like "NaN") stays as given, with its error.
        if isinstance(value, int | float | Decimal) and value < 0:
            shown = value if value > -(10**18) else "a larger negative number"  # prints short
            errors[field] = f"must be zero or more, not {shown}; leave blank for no limit"
    if all(getattr(budget, field) is None for field in budget.LIMITS) and not errors:
        errors["max_cost"] = "the budget limits nothing: set a cost, token, tool-call or step limit"
    if budget.run_id is not None and budget.period not in ("run", "total"):
        errors["period"] = "a budget for one run counts per run; choose 'per run'"
    return errors


def approval_errors(approval: Any) -> dict[str, str]:
    errors: dict[str, str] = {}
    if approval.schema is not None:
        try:
            check_schema(approval.schema)
        except ValueError as exc:
            errors["schema"] = str(exc)
    if approval.default not in ("approve", "reject"):
        errors["default"] = "must be 'approve' or 'reject'"
    return errors


def check_schema(schema: Any) -> None:
    """Raise ``ValueError`` naming the problem if ``schema`` is not a valid JSON Schema."""
    from jsonschema import exceptions, validators

    if not isinstance(schema, dict):
        raise ValueError(f"a JSON Schema must be an object, not {type(schema).__name__}")
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        raise ValueError(f"not a valid JSON Schema at {where}: {exc.message}") from None


def schema_errors(schema: dict[str, Any], data: Any) -> list[str]:
    """Every way ``data`` fails ``schema``, each naming its path (e.g. ``data.amount``)."""
    from jsonschema import validators

    validator = validators.validator_for(schema)(schema)
    messages = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path))):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        messages.append(f"data{path}: {error.message}")
    return messages
