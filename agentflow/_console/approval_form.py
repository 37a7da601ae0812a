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
from datetime import timedelta
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString

from agentflow._console import trees
from agentflow._engine.decisions import MAX_COMMENT_CHARS, is_approved, requested_data
from agentflow._guardrails.redaction import REPLACEMENT
from agentflow.models import Approval

SIMPLE = {"string": "string", "number": "number", "integer": "integer", "boolean": "boolean"}
# A labelled value or a change is shown within these bounds; the record page has it all.
SHOWN_CHARS = 4_000
SHOWN_NODES = 200
SHOWN_FIELDS = 100
MISSING = object()


@dataclass(frozen=True)
class Shown:
    """One labelled value of a request: its label, the property name, the value as HTML."""

    label: str
    name: str
    value: SafeString
    description: str = ""


@dataclass(frozen=True)
class Change:
    """One field the reviewer changed: what the agent proposed, what was decided."""

    label: str
    proposed: SafeString
    decided: SafeString


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
    label: str = ""  # the schema's title of the property, else its name

    @property
    def shown_label(self) -> str:
        return self.label or self.name


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

    @property
    def shown(self) -> list[Shown]:
        """The request as labelled values, in the schema's order."""
        return labelled(self.approval.schema, self.initial)

    @property
    def reason(self) -> str:
        request = self.approval.request
        reason = request.get("reason") if isinstance(request, dict) else None
        return reason if isinstance(reason, str) else ""

    @property
    def changes(self) -> list[Change] | None:
        """The reviewer's edits (None: nothing was approved, so nothing to compare)."""
        return changes(self.approval, self.initial)

    @property
    def waited(self) -> timedelta | None:
        """How long the question waited for a person (None while it is pending)."""
        decided, asked = self.approval.decided_at, self.approval.created_at
        return decided - asked if decided and asked else None


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
        replace(
            _field(name, spec if isinstance(spec, dict) else {}, values, name in required),
            label=_label(name, spec),
        )
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


def value_html(value: Any, share: int = 1) -> SafeString:
    """One value formatted by its type: text, a number, yes/no, or a collapsible tree.

    ``share`` values are shown together: they split the payload cut between them, so a
    request of many large fields renders no more than one payload's worth.
    """
    chars = max(200, min(SHOWN_CHARS, trees.CHARS // max(share, 1)))
    nodes = max(10, min(SHOWN_NODES, trees.MAX_NODES // max(share, 1)))
    if isinstance(value, bool):
        return format_html('<span class="af-v af-v--literal">{}</span>', "yes" if value else "no")
    if value is None:
        return format_html('<span class="af-v af-v--literal">{}</span>', "\u2013")
    if isinstance(value, dict | list):
        return trees.render(
            value,
            chars=chars,
            nodes=nodes,
            open_levels=1,
            cut_note="cut here; the Request field of the approval's record page has it all",
        )
    return SafeString(trees.scalar(value, trees.Budget(nodes, chars)))


def _label(name: str, spec: Any) -> str:
    title = spec.get("title") if isinstance(spec, dict) else None
    return str(title) if isinstance(title, str) and title.strip() else name


def labelled(schema: Any, data: Any) -> list[Shown]:
    """``data`` as labelled values: the schema's properties first, then any other keys."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    properties = properties if isinstance(properties, dict) else {}
    if not isinstance(data, dict):
        if data is None:
            return []
        return [Shown(_label("value", schema), "", value_html(data))]
    shown: list[Shown] = []
    share = min(len(data), SHOWN_FIELDS)
    for name, spec in properties.items():
        if len(shown) == SHOWN_FIELDS:
            break
        if name in data:
            description = spec.get("description") if isinstance(spec, dict) else None
            shown.append(
                Shown(
                    _label(name, spec),
                    name,
                    value_html(data[name], share),
                    description if isinstance(description, str) else "",
                )
            )
    for name, value in data.items():
        if len(shown) >= SHOWN_FIELDS:
            break
        if name not in properties:
            shown.append(Shown(str(name), str(name), value_html(value, share)))
    return shown


def changes(approval: Approval, proposed: Any) -> list[Change] | None:
    """Per field, what the agent proposed against what was decided, from stored copies.

    Both sides are the redacted copies kept with the approval (the request, and the
    reviewer's data as recorded), so a sealed value is never revealed: a secret left as
    it was reads "[redacted]" on both sides and is not a change. None when nothing was
    approved; an empty list when the approval kept the proposal as it was.
    """
    if not approval.is_decided or not is_approved(approval):
        return None
    decided = approval.data
    if decided is None or decided == proposed:
        return []
    properties = approval.schema.get("properties") if isinstance(approval.schema, dict) else None
    properties = properties if isinstance(properties, dict) else {}
    if not (isinstance(proposed, dict) and isinstance(decided, dict)):
        return [Change("value", value_html(proposed, 2), value_html(decided, 2))]
    names = [*proposed, *(name for name in decided if name not in proposed)]
    changed = [name for name in names if proposed.get(name, MISSING) != decided.get(name, MISSING)][
        :SHOWN_FIELDS
    ]
    share = 2 * len(changed)  # both sides of every change split one payload's cut
    return [
        Change(
            _label(str(name), properties.get(name)),
            _missing_or(proposed.get(name, MISSING), share),
            _missing_or(decided.get(name, MISSING), share),
        )
        for name in changed
    ]


def _missing_or(value: Any, share: int) -> SafeString:
    if value is MISSING:
        return format_html('<span class="af-v af-v--missing">{}</span>', "(not set)")
    return value_html(value, share)
