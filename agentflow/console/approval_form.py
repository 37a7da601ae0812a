"""The reviewer's form of a pending approval, built from its JSON Schema.

Simple properties (string, number, integer, boolean, enum) become inputs; anything else,
and data without an object schema, is edited as JSON text. The browser collects the
values back into one JSON value and sends it to the decide view only when the reviewer
changed something, so an unchanged approval never replaces the real (unredacted) data
with the redacted copy shown here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from agentflow.engine.approvals import MAX_COMMENT_CHARS, requested_data
from agentflow.gates.redaction import REPLACEMENT
from agentflow.models import Approval

SIMPLE = {"string": "string", "number": "number", "integer": "integer", "boolean": "boolean"}


@dataclass(frozen=True)
class Choice:
    value: str  # the option's JSON text
    label: str
    selected: bool


@dataclass(frozen=True)
class Field:
    """One input of the form; ``kind`` tells the browser how to read it back."""

    name: str
    kind: str  # string | number | integer | boolean | enum | json
    text: str  # the initial value as the input shows it
    required: bool = False
    description: str = ""
    choices: list[Choice] = field(default_factory=list)
    checked: bool = False
    redacted: bool = False  # it hides a secret: unchanged, the real value is kept


@dataclass(frozen=True)
class ReviewForm:
    """What the approval panel renders: its fields, or one JSON text area."""

    approval: Approval
    initial: Any
    fields: list[Field]

    max_comment = MAX_COMMENT_CHARS  # the textarea's maxlength: the decide view's own limit

    @property
    def whole_json(self) -> str:
        return pretty(self.initial)

    @property
    def redacted(self) -> bool:
        return holds_redacted(self.initial)


def pretty(value: Any) -> str:
    """Readable JSON, never cut (the reviewer edits it); the template escapes it."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def holds_redacted(value: Any) -> bool:
    """Whether a shown value hides a secret: left unchanged, it keeps its real value."""
    return REPLACEMENT in json.dumps(value, ensure_ascii=False, default=str)


def review_form(approval: Approval) -> ReviewForm:
    """The form for ``approval``: fields when its schema is an object of properties."""
    initial = requested_data(approval)
    schema = approval.schema if isinstance(approval.schema, dict) else None
    properties = schema.get("properties") if schema else None
    if not isinstance(properties, dict) or not (initial is None or isinstance(initial, dict)):
        return ReviewForm(approval, initial, [])
    values = initial or {}
    required = set(schema.get("required") or [])
    fields = [
        _field(name, spec if isinstance(spec, dict) else {}, values, name in required)
        for name, spec in properties.items()
    ]
    fields = [
        replace(one, redacted=True) if holds_redacted(values.get(one.name)) else one
        for one in fields
    ]
    return ReviewForm(approval, initial, fields)


def _field(name: str, spec: dict[str, Any], values: dict[str, Any], required: bool) -> Field:
    present = name in values
    value = values.get(name, spec.get("default"))
    description = str(spec.get("description") or spec.get("title") or "")
    if isinstance(spec.get("enum"), list):
        choices = [
            Choice(json.dumps(option), str(option), present and option == value)
            for option in spec["enum"]
        ]
        return Field(name, "enum", "", required, description, choices)
    kind = SIMPLE.get(spec.get("type")) if isinstance(spec.get("type"), str) else None
    if kind == "boolean" and (value is None or isinstance(value, bool)):
        return Field(name, kind, "", required, description, checked=bool(value))
    if kind == "string" and (value is None or isinstance(value, str)):
        return Field(name, kind, value or "", required, description)
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if kind in ("number", "integer") and (value is None or numeric):
        return Field(name, kind, "" if value is None else str(value), required, description)
    text = "" if value is None and not present else pretty(value)
    return Field(name, "json", text, required, description)
