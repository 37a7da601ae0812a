"""Argument schemas derived from type hints, with validation errors that name the field.

pydantic builds the model and its JSON Schema from the signature, so one source of
truth (the hints) drives both the published schema and the check before a call.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict


class SchemaError(TypeError):
    """A signature cannot be turned into a JSON Schema."""


def model_for(fn: Callable[..., Any], *, title: str, skip: Iterable[str] = ()) -> type[BaseModel]:
    """Build a pydantic model whose fields are ``fn``'s parameters (minus ``skip``)."""
    skipped = set(skip)
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # unresolved forward references, typos in hints
        raise SchemaError(
            f"{title}: cannot read the type hints of {fn.__qualname__}: {exc}"
        ) from exc
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.name in skipped:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise SchemaError(
                f"{title}: parameter *{param.name} of {fn.__qualname__} cannot be described by a "
                "JSON Schema; declare each argument by name."
            )
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    try:
        model = pydantic.create_model(
            title.replace(".", "_"), __config__=ConfigDict(extra="forbid"), **fields
        )
        model.model_json_schema()
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as exc:
        raise SchemaError(
            f"{title}: the parameters of {fn.__qualname__} have a type with no JSON Schema "
            f"({exc.__class__.__name__}: {exc}). Use JSON-compatible types or pydantic models."
        ) from exc
    return model


def validate(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """Return ``values`` converted by ``model``; raise ``ValueError`` naming each bad field."""
    if not isinstance(values, dict):
        raise ValueError(f"expected an object of named arguments, got {type(values).__name__}")
    try:
        instance = model.model_validate(values)
    except pydantic.ValidationError as exc:
        raise ValueError(describe_errors(exc)) from None
    return {name: getattr(instance, name) for name in model.model_fields}


def describe_errors(exc: pydantic.ValidationError) -> str:
    """Render pydantic's errors as ``path: message (got value)`` items."""
    parts = []
    for error in exc.errors():
        path = ".".join(str(item) for item in error["loc"]) or "(arguments)"
        given = error.get("input")
        shown = "" if error["type"] == "missing" else f" (got {_short(given)})"
        parts.append(f"{path}: {error['msg']}{shown}")
    return "; ".join(parts)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
