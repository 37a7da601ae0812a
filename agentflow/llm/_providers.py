"""The configured providers, by alias (``AGENTFLOW["LLM"]``), built once per process.

Configured the way Django configures caches: each alias names a ``BACKEND`` class, the
``MODEL`` it asks for and backend ``OPTIONS``. ``problems()`` lists what is wrong with the
setting for the system check, so a typo is reported by ``manage.py check`` and never
raises at import time.
"""

from __future__ import annotations

import difflib
from functools import cache
from typing import Any

from django.utils.module_loading import import_string

from agentflow import conf
from agentflow.exceptions import UnknownModel
from agentflow.llm._base import Provider

DEFAULT_ALIAS = "default"
ENTRY_KEYS = ("BACKEND", "MODEL", "OPTIONS")


def get(alias: str | None = None) -> Provider:
    """The provider of ``alias`` (``"default"`` when None); ``UnknownModel`` if none is set."""
    return _build(alias or DEFAULT_ALIAS)


@conf.on_reload
def clear() -> None:
    """Forget the built providers (the setting changed)."""
    _build.cache_clear()


@cache
def _build(alias: str) -> Provider:
    entries = conf.setting("LLM") or {}
    if alias not in entries:
        known = ", ".join(sorted(entries)) or "none"
        hint = _did_you_mean(alias, entries)
        raise UnknownModel(
            f"No model alias '{alias}' in AGENTFLOW['LLM'] (configured: {known}).{hint} Add "
            f"AGENTFLOW['LLM']['{alias}'] = {{'BACKEND': 'agentflow.llm.OpenAIProvider', "
            "'MODEL': '...'}, or pass model= one of the configured aliases."
        )
    problems = _entry_problems(alias, entries[alias])
    if problems:
        raise UnknownModel(problems[0])
    entry = entries[alias]
    backend = import_string(entry["BACKEND"])
    return backend(alias, str(entry.get("MODEL") or ""), dict(entry.get("OPTIONS") or {}))


def problems() -> list[str]:
    """What is wrong with ``AGENTFLOW["LLM"]``, one sentence each (empty: nothing)."""
    entries = conf.setting("LLM")
    if not isinstance(entries, dict):
        return [f"AGENTFLOW['LLM'] must be a dict of aliases, not {type(entries).__name__}."]
    found: list[str] = []
    for alias, entry in entries.items():
        found += _entry_problems(alias, entry)
    return found


def _entry_problems(alias: str, entry: Any) -> list[str]:
    key = f"AGENTFLOW['LLM']['{alias}']"
    if not isinstance(entry, dict):
        return [f"{key} must be a dict with BACKEND, MODEL and OPTIONS, not {entry!r}."]
    found = [
        f"{key} has an unknown key '{name}'.{_did_you_mean(name, ENTRY_KEYS)} "
        f"Known keys: {', '.join(ENTRY_KEYS)}."
        for name in entry
        if name not in ENTRY_KEYS
    ]
    backend = entry.get("BACKEND")
    if not backend:
        found.append(f"{key} has no BACKEND, e.g. 'agentflow.llm.OpenAIProvider'.")
    else:
        try:
            cls = import_string(backend)
        except ImportError as exc:
            found.append(f"{key}['BACKEND'] = {backend!r} cannot be imported: {exc}.")
        else:
            if not (isinstance(cls, type) and issubclass(cls, Provider)):
                found.append(
                    f"{key}['BACKEND'] = {backend!r} is not a subclass of agentflow.llm.Provider."
                )
    if not isinstance(entry.get("OPTIONS", {}), dict):
        found.append(f"{key}['OPTIONS'] must be a dict.")
    return found


def _did_you_mean(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""
