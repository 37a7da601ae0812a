"""Where agents and tools are registered, looked up, and discovered from ``agents.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules

from agentflow.exceptions import UnknownAgent, UnknownTool

if TYPE_CHECKING:
    from agentflow._definitions import AgentDefinition, ToolDefinition

# name -> version -> definition; dict order keeps registration order, and the version
# registered last is the one new runs start on.
_agents: dict[str, dict[str, AgentDefinition]] = {}
_tools: dict[str, ToolDefinition] = {}


def autodiscover() -> None:
    """Import the ``agents`` module of every installed app."""
    autodiscover_modules("agents")


def _same_function(a: object, b: object) -> bool:
    # A module imported twice (e.g. under two names) re-registers the same function.
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == (
        getattr(b, "__module__", None),
        getattr(b, "__qualname__", None),
    )


def register_agent(definition: AgentDefinition) -> None:
    """Add an agent version; a different function under the same name and version is an error."""
    versions = _agents.setdefault(definition.name, {})
    existing = versions.get(definition.version)
    if existing is not None and not _same_function(existing.fn, definition.fn):
        raise ImproperlyConfigured(
            f"Agent '{definition.name}' version {definition.version} is registered twice "
            f"({existing.fn.__module__}.{existing.fn.__qualname__} and "
            f"{definition.fn.__module__}.{definition.fn.__qualname__}). "
            "Give one of them another name or version."
        )
    versions.pop(definition.version, None)
    versions[definition.version] = definition


def register_tool(definition: ToolDefinition) -> None:
    """Add a tool; a different function under the same name is an error."""
    existing = _tools.get(definition.name)
    if existing is not None and not _same_function(existing.fn, definition.fn):
        raise ImproperlyConfigured(
            f"Tool '{definition.name}' is registered twice ({existing.fn.__module__}."
            f"{existing.fn.__qualname__} and {definition.fn.__module__}."
            f"{definition.fn.__qualname__}). Pass name= to one of them."
        )
    _tools[definition.name] = definition


def get_agent(name: str, version: str | None = None) -> AgentDefinition:
    """Return an agent version (the newest registered one when ``version`` is None)."""
    versions = _agents.get(name)
    if not versions:
        known = ", ".join(sorted(_agents)) or "none"
        raise UnknownAgent(
            f"No agent named '{name}' is registered (known agents: {known}). "
            "Check the name, and that the app defining it is in INSTALLED_APPS and has an "
            "agents.py module."
        )
    if version is None:
        return next(reversed(versions.values()))
    try:
        return versions[version]
    except KeyError:
        raise UnknownAgent(
            f"Agent '{name}' version {version} is not deployed here "
            f"(deployed versions: {', '.join(versions)}). Keep version {version} registered "
            "until its runs finish, or cancel them."
        ) from None


def get_tool(name: str) -> ToolDefinition:
    """Return the tool registered under ``name``."""
    try:
        return _tools[name]
    except KeyError:
        known = ", ".join(sorted(_tools)) or "none"
        raise UnknownTool(
            f"No tool named '{name}' is registered (known tools: {known}). "
            "Decorate it with @agentflow.tool in an installed app's agents.py."
        ) from None


def agents() -> list[AgentDefinition]:
    """Every registered agent version, by name then registration order."""
    return [d for name in sorted(_agents) for d in _agents[name].values()]


def tools() -> list[ToolDefinition]:
    """Every registered tool, by name."""
    return [_tools[name] for name in sorted(_tools)]
