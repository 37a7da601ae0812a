"""JSON values as collapsible trees: nested ``<details>``/``<ul>``, server-rendered, no script.

A tree is bounded three ways, so a hostile payload renders quickly and small: at most
``MAX_DEPTH`` levels (deeper containers show as "{… 3 keys}"), ``MAX_NODES`` values, and
``chars`` characters of keys and text (the timeline's PAYLOAD_CHARS cut). Every container
is visited once and left as soon as a bound is reached, so rendering is linear in what is
shown, never in the size of the payload. Every key and value is escaped here, one by one;
only the tags around them are written by this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

MAX_DEPTH = 8
MAX_NODES = 1_000
CHARS = 20_000
OPEN_LEVELS = 2  # containers this shallow start open
KEY_CHARS = 200
CUT = "cut here; the step's own page shows all of it"


@dataclass
class Budget:
    """What is left to show: values and characters."""

    nodes: int
    chars: int
    cut: bool = False

    def take(self, text: str) -> str:
        """``text`` cut to the characters left, which it uses up."""
        if len(text) > self.chars:
            text = text[: max(self.chars, 0)] + "…"
            self.cut = True
        self.chars -= len(text)
        return text


def render(
    value: Any,
    *,
    chars: int = CHARS,
    nodes: int = MAX_NODES,
    open_levels: int = OPEN_LEVELS,
    cut_note: str = CUT,
) -> SafeString:
    """``value`` as an escaped tree; a note says where a bound cut it."""
    budget = Budget(nodes, chars)
    out: list[str] = ['<div class="af-tree">']
    _node(value, 0, None, out, budget, open_levels)
    if budget.cut:
        out.append(f'<p class="af-tree-cut" data-testid="tree-cut">… ({escape(cut_note)})</p>')
    out.append("</div>")
    return mark_safe("".join(out))  # every key and value was escaped above


def scalar(value: Any, budget: Budget | None = None) -> str:
    """One plain value as escaped HTML: strings as text, the rest as JSON writes them."""
    budget = budget or Budget(MAX_NODES, CHARS)
    if isinstance(value, str):
        return f'<span class="af-v af-v--string">{escape(budget.take(value))}</span>'
    if value is None or isinstance(value, bool):
        return f'<span class="af-v af-v--literal">{json.dumps(value)}</span>'
    if isinstance(value, int | float):
        try:
            text = json.dumps(value)
        except ValueError:  # an integer of more digits than Python converts
            text = "(a number too long to show)"
        return f'<span class="af-v af-v--number">{escape(budget.take(text))}</span>'
    return f'<span class="af-v">{escape(budget.take(str(value)))}</span>'


def _size(value: Any) -> str:
    if isinstance(value, dict):
        return f"{{{len(value)} key{'' if len(value) == 1 else 's'}}}"
    return f"[{len(value)} item{'' if len(value) == 1 else 's'}]"


def _node(
    value: Any, level: int, label: str | None, out: list[str], budget: Budget, open_levels: int
) -> None:
    budget.nodes -= 1
    key = "" if label is None else f'<span class="af-k">{escape(budget.take(label))}</span> '
    if not isinstance(value, dict | list) or not value:
        shown = _size(value) if isinstance(value, dict | list) else scalar(value, budget)
        out.append(f"{key}{shown}")
        return
    if level >= MAX_DEPTH:
        budget.cut = True
        out.append(f'{key}<span class="af-v af-v--more">{_size(value)} …</span>')
        return
    items = value.items() if isinstance(value, dict) else enumerate(value)
    opened = " open" if level < open_levels else ""
    out.append(f'<details class="af-tree-node"{opened}><summary>{key}')
    out.append(f'<span class="af-size">{_size(value)}</span></summary><ul>')
    for shown, (name, item) in enumerate(items):
        if budget.nodes <= 0 or budget.chars <= 0:
            budget.cut = True
            out.append(f'<li class="af-tree-more">… {len(value) - shown} more</li>')
            break
        out.append("<li>")
        _node(item, level + 1, str(name)[:KEY_CHARS], out, budget, open_levels)
        out.append("</li>")
    out.append("</ul></details>")
