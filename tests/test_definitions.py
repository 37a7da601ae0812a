"""@tool and @agent: schemas from type hints, validation messages and registration rules."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ImproperlyConfigured
from pydantic import BaseModel

import agentflow
from agentflow import _registry as registry
from agentflow._definitions import parse_rate
from agentflow._schema import SchemaError


class Opaque:
    """A type pydantic cannot describe."""


class Address(BaseModel):
    city: str
    zip: str


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_tools", dict(registry._tools))
    monkeypatch.setattr(registry, "_agents", {k: dict(v) for k, v in registry._agents.items()})


def test_tool_schema_comes_from_type_hints(clean_registry):
    @agentflow.tool(name="t.ship")
    def ship(
        order_id: str, quantity: int, to: Address, rush: bool = False, *, idempotency_key: str
    ) -> dict:
        return {}

    schema = ship.json_schema
    assert schema["required"] == ["order_id", "quantity", "to"]
    assert schema["properties"]["quantity"]["type"] == "integer"
    assert "idempotency_key" not in schema["properties"]
    assert ship.takes_idempotency_key
    assert ship.validate({"order_id": "o1", "quantity": 2, "to": {"city": "Oslo", "zip": "0150"}})[
        "to"
    ] == Address(city="Oslo", zip="0150")


def test_stop_requested_is_filled_by_the_runtime_not_the_schema(clean_registry):
    @agentflow.tool(name="t.crawl")
    def crawl(url: str, *, idempotency_key: str, stop_requested: threading.Event) -> None: ...

    assert crawl.takes_stop_requested and crawl.takes_idempotency_key
    assert list(crawl.json_schema["properties"]) == ["url"]


def test_validation_errors_name_the_field_path(clean_registry):
    @agentflow.tool(name="t.ship2")
    def ship(quantity: int, to: Address) -> None: ...

    with pytest.raises(ValueError) as caught:
        ship.validate({"quantity": "three", "to": {"city": "Oslo"}, "colour": "red"})
    message = str(caught.value)
    assert "quantity: Input should be a valid integer" in message
    assert "(got 'three')" in message
    assert "to.zip: Field required" in message
    assert "colour: Extra inputs are not permitted" in message


def test_default_tool_name_is_app_label_and_function(clean_registry):
    from tests.testapp import agents

    assert agents.typed.name == "tests.typed"
    assert registry.get_tool("billing.fetch_invoices").fn.__name__ == "fetch_invoices"


def test_untypable_signatures_are_refused_at_decoration(clean_registry):
    with pytest.raises(SchemaError, match=r"\*args"):

        @agentflow.tool(name="t.varargs")
        def varargs(*args: int) -> None: ...

    with pytest.raises(SchemaError, match="no JSON Schema"):

        @agentflow.tool(name="t.opaque")
        def opaque(thing: Opaque) -> None: ...


def test_same_name_for_two_functions_is_an_error(clean_registry):
    @agentflow.tool(name="t.dupe")
    def one() -> None: ...

    with pytest.raises(ImproperlyConfigured, match="registered twice"):

        @agentflow.tool(name="t.dupe")
        def two() -> None: ...


def test_unknown_tool_lists_the_known_ones():
    with pytest.raises(agentflow.UnknownTool, match=r"known tools: .*billing\.pay"):
        registry.get_tool("billing.refund")


@pytest.mark.parametrize(
    ("rate", "parsed"),
    [
        ("5/s", (5, 1)),
        ("100/m", (100, 60)),
        ("1000/h", (1000, 3600)),
        ("10/d", (10, 86400)),
        ("1/s", (1, 1)),
        ("7/h", (7, 3600)),
    ],
)
def test_rate_strings_parse(rate, parsed):
    assert parse_rate(rate) == parsed


@pytest.mark.parametrize("rate", ["5", "x/s", "0/s", "5/week", "-1/m"])
def test_bad_rate_strings_are_refused(rate):
    with pytest.raises(ValueError, match="must look like"):
        parse_rate(rate)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries"),
        ({"timeout": 0}, "timeout"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_bad_tool_options_are_refused(clean_registry, options, message):
    with pytest.raises(ValueError, match=message):
        agentflow.tool(name="t.bad", **options)(lambda: None)


def test_agent_needs_a_context_parameter(clean_registry):
    with pytest.raises(TypeError, match="first parameter must be the RunContext"):

        @agentflow.agent(name="t.noctx")
        def noctx() -> None: ...


def test_newest_registered_version_starts_new_runs(clean_registry):
    def v1(ctx) -> int:
        return 1

    def v2(ctx) -> int:
        return 2

    agentflow.agent(name="t.versions", version="1")(v1)
    agentflow.agent(name="t.versions", version="2")(v2)
    assert registry.get_agent("t.versions").version == "2"
    assert registry.get_agent("t.versions", "1").fn is v1
    with pytest.raises(agentflow.UnknownAgent, match="version 3 is not deployed here"):
        registry.get_agent("t.versions", "3")
