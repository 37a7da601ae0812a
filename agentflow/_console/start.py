"""The "Start run" form, mixed into ``RunAdmin``: an agent's input, field by field.

The fields come from the JSON Schema of the agent's input (its type hints): strings,
numbers, integers, booleans and enums are inputs, anything else is JSON text. Each value
is read and checked on the server, and every message names its field. The run starts with
``agentflow.start(agent, input, owner=<the operator>)``, under ``agentflow.start_run``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pydantic
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_http_methods

import agentflow
from agentflow import _registry as registry
from agentflow import permissions
from agentflow._console.csp import csp
from agentflow._definitions import AgentDefinition
from agentflow.exceptions import AgentflowError, UnknownAgent
from agentflow.models import Run

SIMPLE = ("string", "number", "integer", "boolean")
PREFIX = "input-"  # form names of the input fields, apart from the form's own


@dataclass
class InputField:
    """One argument of the agent, as the form shows it."""

    name: str
    kind: str  # string | number | integer | boolean | enum | json
    required: bool
    description: str = ""
    text: str = ""  # what the input shows (the default, or what was posted)
    choices: list[tuple[str, str]] = field(default_factory=list)  # (JSON text, label)
    errors: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return PREFIX + self.name


def input_fields(definition: AgentDefinition) -> list[InputField]:
    """The agent's arguments as fields, in signature order, from its input's JSON Schema."""
    schema = definition.input_model.model_json_schema()
    required = set(schema.get("required", []))
    return [
        _field(name, spec, name in required, schema.get("$defs", {}))
        for name, spec in schema.get("properties", {}).items()
    ]


def _field(name: str, spec: dict[str, Any], required: bool, defs: dict[str, Any]) -> InputField:
    default = spec.get("default")
    description = str(spec.get("description") or "")
    spec = _resolve(spec, defs)
    options = [one for one in spec.get("anyOf", []) if one.get("type") != "null"]
    if len(options) == 1:  # Optional[X]: X, and blank means None
        spec = _resolve(options[0], defs)
    if isinstance(spec.get("enum"), list):
        choices = [(json.dumps(value), str(value)) for value in spec["enum"]]
        text = "" if default is None else json.dumps(default)
        return InputField(name, "enum", required, description, text, choices)
    kind = spec.get("type") if spec.get("type") in SIMPLE else "json"
    if default is None:
        text = ""
    elif kind == "string":
        text = str(default)
    elif kind == "boolean":
        text = "on" if default else ""
    elif kind == "json":
        text = json.dumps(default)
    else:
        text = str(default)
    return InputField(name, kind, required, description, text)


def _resolve(spec: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = spec.get("$ref", "")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return defs.get(ref.removeprefix("#/$defs/"), spec)
    return spec


def read_input(fields: list[InputField], data: Any) -> dict[str, Any]:
    """The input from posted ``data``; problems go to each field's ``errors``."""
    values: dict[str, Any] = {}
    for one in fields:
        text = data.get(one.key, "")
        one.text = "on" if one.kind == "boolean" and text else text
        if one.kind == "boolean":
            values[one.name] = bool(text)
            continue
        blank = text == "" if one.kind == "string" else text.strip() == ""
        if blank:
            if one.required:
                one.errors.append(f"{one.name} is required: fill it in.")
            continue  # left out: the agent's default applies
        try:
            values[one.name] = _parse(one, text)
        except ValueError as exc:
            one.errors.append(f"{one.name}: {exc}")
    return values


def _parse(one: InputField, text: str) -> Any:
    if one.kind == "string":
        return text
    if one.kind == "integer":
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"give a whole number, e.g. 3, not {text!r}.") from None
    if one.kind == "number":
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(f"give a number, e.g. 2.5, not {text!r}.") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"this is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            'write it like ["a", "b"] or {"key": 1}, with double quotes around strings.'
        ) from None
    if one.kind == "enum" and text not in {value for value, _ in one.choices}:
        raise ValueError("choose one of the listed values.")
    return value


def check_types(definition: AgentDefinition, fields: list[InputField], values: dict) -> None:
    """Check ``values`` against the agent's input model; each error goes to its field."""
    try:
        definition.input_model.model_validate(values)
    except pydantic.ValidationError as exc:
        by_name = {one.name: one for one in fields}
        for error in exc.errors():
            location = [str(part) for part in error["loc"]]
            target = by_name.get(location[0]) if location else None
            if target is None or target.errors:
                continue
            where = ".".join(location)
            target.errors.append(f"{where}: {error['msg']}.")


class StartRunMixin:
    """The ``start/`` URL of the run admin."""

    admin_site: Any
    model: type[Run]

    def start_urls(self) -> list[URLPattern]:
        return [
            path("start/", self.admin_site.admin_view(self.start_view), name="agentflow_run_start")
        ]

    @method_decorator(require_http_methods(["GET", "HEAD", "POST"]))
    @csp
    def start_view(self, request: HttpRequest) -> HttpResponse:
        """Choose an agent, fill in its input, and start a run owned by the operator."""
        if not request.user.has_perm(permissions.START):
            raise PermissionDenied
        source = request.POST if request.method == "POST" else request.GET
        names = sorted({definition.name for definition in registry.agents()})
        name = source.get("agent", "")
        problems: list[str] = []
        definition = None
        if name:
            try:
                definition = registry.get_agent(name)
            except UnknownAgent:
                problems.append(f"There is no agent {name!r} here; choose one from the list.")
        fields = input_fields(definition) if definition is not None else []
        if request.method == "POST" and definition is not None:
            values = read_input(fields, request.POST)
            if not any(one.errors for one in fields):
                check_types(definition, fields, values)
            if not any(one.errors for one in fields):
                try:
                    run = agentflow.start(definition, values, owner=request.user)
                except AgentflowError as exc:
                    problems.append(str(exc))
                else:
                    message = f"Started run {run.id} of {definition.name}."
                    self.log_addition(request, run, message)  # type: ignore[attr-defined]
                    messages.success(request, message)
                    return HttpResponseRedirect(
                        reverse(f"{self.admin_site.name}:agentflow_run_change", args=[run.id])
                    )
        elif request.method == "POST":
            problems = problems or ["Choose the agent to start."]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Start a run",
            "agents": names,
            "agent": name,
            # A dict, not the definition: templates call what is callable.
            "chosen": definition and {"name": definition.name, "version": definition.version},
            "fields": fields,
            "problems": problems,
            "has_errors": bool(problems) or any(one.errors for one in fields),
        }
        return TemplateResponse(request, "admin/agentflow/run/start.html", context)
