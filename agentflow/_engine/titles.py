"""Titles of tool approvals: the call in words ("billing.pay: INV-2011, 310.25").

A tool may set ``@tool(approval_title="Pay {invoice_id}: {amount}")``. The template is
parsed once, when the tool is declared: only plain ``{name}`` fields, no attribute or
index access, no conversions or format specs. A call fills it with ``str()`` of plain
argument values, each cut short, and the title is capped; a missing or non-plain value
falls back to the default title. Values come from the (redacted) arguments the reviewer
sees, so a title says no more than the request does. Building one is linear in the size
of the template and the arguments.
"""

from __future__ import annotations

import string
from decimal import Decimal
from typing import Any

from agentflow.exceptions import ToolDefinitionError

TITLE_CHARS = 150  # Approval.title holds 300; the fan-out suffix and redaction need room
VALUE_CHARS = 40  # one argument's value in a title
VALUES_SHOWN = 3  # arguments a default title names
PLAIN = (str, int, float, Decimal)

Template = tuple[tuple[str, str | None], ...]  # (literal text, field name or None)


def parse_template(tool_name: str, template: str) -> Template:
    """Check ``template`` and return its pieces; ``ToolDefinitionError`` names the problem."""
    if not isinstance(template, str) or not template.strip():
        raise ToolDefinitionError(
            f"tool {tool_name}: approval_title must be a non-empty format string such as "
            "'Pay {invoice_id}: {amount}'."
        )
    if len(template) > TITLE_CHARS:
        raise ToolDefinitionError(
            f"tool {tool_name}: approval_title is {len(template)} characters long; keep it "
            f"under {TITLE_CHARS}."
        )
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ToolDefinitionError(
            f"tool {tool_name}: approval_title {template!r} is not a format string ({exc}). "
            "Write literal braces as '{{' and '}}'."
        ) from None
    pieces: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None:
            if not name.isidentifier():
                raise ToolDefinitionError(
                    f"tool {tool_name}: approval_title field {{{name}}} must name an argument, "
                    "as in {invoice_id}: no positions, attribute access ('.') or indexing "
                    "('[')."
                )
            if spec or conversion:
                raise ToolDefinitionError(
                    f"tool {tool_name}: approval_title field {{{name}}} takes no conversion "
                    "or format spec; values are shown as text. Write {" + name + "}."
                )
        pieces.append((literal, name))
    return tuple(pieces)


def _plain(value: Any) -> str | None:
    """``str()`` of a plain value on one line, cut to VALUE_CHARS; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, PLAIN):
        return None
    text = value[: VALUE_CHARS * 4] if isinstance(value, str) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def cap(text: str, limit: int = TITLE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def default_title(tool_name: str, args: Any) -> str:
    """``tool: v1, v2, v3`` from the first short plain argument values, or ``Run tool x``."""
    values = []
    for value in args.values() if isinstance(args, dict) else ():
        text = _plain(value)
        if text and len(text) < VALUE_CHARS and "[redacted]" not in text:
            values.append(text)
            if len(values) == VALUES_SHOWN:
                break
    if not values:
        return cap(f"Run tool {tool_name}")
    return cap(f"{tool_name}: {', '.join(values)}")


def approval_title(tool_name: str, template: Template | None, args: Any) -> str:
    """The title of an approval of one call: the tool's template filled, else the default."""
    if template and isinstance(args, dict):
        parts = []
        for literal, name in template:
            parts.append(literal)
            if name is not None:
                text = _plain(args.get(name))
                if text is None:
                    return default_title(tool_name, args)
                parts.append(text)
        title = " ".join("".join(parts).split())
        if title:
            return cap(title)
    return default_title(tool_name, args)


def child_title(title: str, index: int, position: int) -> str:
    """A fan-out child's title: the call's, and where it stands in the fan-out."""
    return f"{cap(title, TITLE_CHARS - 40)} (call {index} of the fan-out at {position})"
