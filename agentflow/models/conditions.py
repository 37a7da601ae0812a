"""Argument conditions of Policy rules, such as ``amount > 1000``, evaluated without ``eval``.

A condition is parsed into a Python expression tree and only a small whitelist of nodes
is walked: comparisons, ``and``/``or``/``not``, argument names (``amount``,
``invoice.total``, ``items[0]``) and literals. Nothing is ever executed. Numbers given as
strings (``"1500.00"``) compare as numbers, because tools often take amounts as text.
"""

from __future__ import annotations

import ast
import operator
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

MAX_LENGTH = 500
COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
MISSING = object()


class ConditionError(ValueError):
    """A condition that cannot be parsed or uses something outside the whitelist."""


@lru_cache(maxsize=512)
def parse(text: str) -> ast.expr:
    """Parse and check ``text``; raise ``ConditionError`` saying what is not allowed."""
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ConditionError(f"is not a valid expression ({exc.msg})") from None
    _check(tree)
    return tree


def _check(node: ast.AST) -> None:
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        _check(node.operand)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in COMPARE:
                raise ConditionError(f"uses the operator {type(op).__name__}, not allowed")
        for operand in (node.left, *node.comparators):
            _check(operand)
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, str | int | float | bool | type(None)):
            raise ConditionError(f"uses the literal {node.value!r}, not allowed")
    elif isinstance(node, ast.List | ast.Tuple | ast.Set):
        for element in node.elts:
            _check(element)
    elif isinstance(node, ast.Name):
        if node.id.startswith("_"):
            raise ConditionError(f"names {node.id!r}; argument names cannot start with '_'")
    elif isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise ConditionError(f"reads {node.attr!r}; names cannot start with '_'")
        _check(node.value)
    elif isinstance(node, ast.Subscript):
        if not isinstance(node.slice, ast.Constant):
            raise ConditionError("indexes with an expression; use a literal key or index")
        _check(node.value)
    else:
        raise ConditionError(
            f"uses {type(node).__name__}, not allowed: write comparisons of argument names "
            "and literals joined by and/or/not, e.g. \"amount > 1000 and currency == 'EUR'\""
        )


def validate(text: str) -> None:
    """Raise ``ConditionError`` if ``text`` is not an allowed condition."""
    parse(text)


def holds(text: str, args: dict[str, Any]) -> bool:
    """Evaluate the condition on a call's arguments; a missing argument makes it False."""
    return bool(_value(parse(text), args)) if text.strip() else True


def _value(node: ast.AST, args: dict[str, Any]) -> Any:
    if isinstance(node, ast.BoolOp):
        values = (_value(v, args) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp):
        operand = _value(node.operand, args)
        if isinstance(node.op, ast.Not):
            return not operand
        number = _number(operand)
        return MISSING if number is None else -number
    if isinstance(node, ast.Compare):
        left = _value(node.left, args)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _value(right_node, args)
            if left is MISSING or right is MISSING or not _compare(op, left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [_value(element, args) for element in node.elts]
    if isinstance(node, ast.Name):
        return args.get(node.id, MISSING)
    if isinstance(node, ast.Attribute):
        container = _value(node.value, args)
        return container.get(node.attr, MISSING) if isinstance(container, dict) else MISSING
    assert isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
    container, key = _value(node.value, args), node.slice.value
    try:
        return container[key] if isinstance(container, dict | list) else MISSING
    except (KeyError, IndexError, TypeError):
        return MISSING


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return None
    return None


def _compare(op: ast.cmpop, left: Any, right: Any) -> bool:
    if not isinstance(op, ast.In | ast.NotIn):
        a, b = _number(left), _number(right)
        if a is not None and b is not None and a.is_finite() and b.is_finite():
            left, right = a, b
    try:
        return bool(COMPARE[type(op)](left, right))
    except TypeError:
        return False  # e.g. "abc" > 3: a rule on a mistyped argument does not match
