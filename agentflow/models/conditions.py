"""Argument conditions of Policy rules, such as ``amount > 1000``, evaluated without ``eval``.

A condition is parsed into a Python expression tree and only a small whitelist of nodes
is walked: comparisons, ``and``/``or``/``not``, argument names (``amount``,
``invoice.total``, ``items[0]``) and literals. Nothing is ever executed. Numbers given as
strings (``"1500.00"``) compare as numbers, because tools often take amounts as text.

A condition that cannot be decided (a missing argument, ``"NaN"`` or ``"Infinity"``, a
number against text) is neither true nor false: ``evaluate`` says None, and the policy
gate takes the safe side, so a guardrail fails closed, never open.
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


def evaluate(text: str, args: dict[str, Any]) -> bool | None:
    """Evaluate the condition on a call's arguments: True, False, or None when it cannot be
    evaluated (a missing argument, a number that is NaN or infinite, values of types that
    do not compare). The caller must treat None as the safe side (fail closed).

    ``and``/``or``/``not`` follow three-valued logic: ``False and ?`` is False, ``True or ?``
    is True, anything else with an unknown part is unknown.
    """
    return _truth(parse(text), args) if text.strip() else True


def _truth(node: ast.AST, args: dict[str, Any]) -> bool | None:
    if isinstance(node, ast.BoolOp):
        decisive = not isinstance(node.op, ast.And)  # the value that settles it
        result: bool | None = not decisive
        for value in node.values:
            truth = _truth(value, args)
            if truth is decisive:
                return decisive
            if truth is None:
                result = None
        return result
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        truth = _truth(node.operand, args)
        return None if truth is None else not truth
    if isinstance(node, ast.Compare):
        result = True
        left = _value(node.left, args)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _value(right_node, args)
            outcome = _compare(op, left, right)
            if outcome is False:
                return False
            if outcome is None:
                result = None
            left = right
        return result
    value = _value(node, args)
    if value is MISSING or _not_a_number(value):
        return None
    return bool(value)


def _value(node: ast.AST, args: dict[str, Any]) -> Any:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        truth = _truth(node.operand, args)
        return MISSING if truth is None else not truth
    if isinstance(node, ast.BoolOp | ast.Compare):
        truth = _truth(node, args)
        return MISSING if truth is None else truth
    if isinstance(node, ast.UnaryOp):
        number = _number(_value(node.operand, args))
        return MISSING if number is None else -number
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
        except (InvalidOperation, ValueError):
            return None
    return None


def _not_a_number(value: Any) -> bool:
    """A value that reads as a number but is NaN or infinite: no comparison of it is sound."""
    number = _number(value)
    return number is not None and not number.is_finite()


def _compare(op: ast.cmpop, left: Any, right: Any) -> bool | None:
    """The comparison's truth, or None when it cannot be decided."""
    if left is MISSING or right is MISSING:
        return None
    if isinstance(op, ast.In | ast.NotIn):
        if _not_a_number(left):
            return None
        try:
            return bool(COMPARE[type(op)](left, right))
        except TypeError:
            return None
    if _not_a_number(left) or _not_a_number(right):
        return None
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        left, right = a, b
    elif not isinstance(op, ast.Eq | ast.NotEq) and (a is not None or b is not None):
        return None  # e.g. "abc" > 3: a number against text has no order
    try:
        return bool(COMPARE[type(op)](left, right))
    except TypeError:
        return None
