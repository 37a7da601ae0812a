"""Log every wake-up and live event agentflow sends while a transaction is still open.

A message sent before its rows commit is the fault an ``on_commit`` on the wrong database
makes (or a transaction opened on the wrong one): the worker, or a page, may read the rows
before they exist. In tests/two_databases.py nothing sends from inside a transaction of
its own, so any open transaction at a send is that fault. tests.settings_two_databases has
workers import this (``CELERY_IMPORTS``) and publish through ``CheckingPublisher``;
tests/two_databases.py imports it too and asserts nothing was sent early on either side.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import before_task_publish
from django.db import connections

from agentflow.events import ChannelLayerPublisher

EARLY = "sent before its transaction committed"
early: list[str] = []


def _check(what: str) -> None:
    open_on = [db.alias for db in connections.all(initialized_only=True) if db.in_atomic_block]
    if open_on:
        early.append(what)
        logging.getLogger(__name__).error("%s %s on %s", what, EARLY, open_on)


@before_task_publish.connect
def _note_an_early_send(sender: str | None = None, **kwargs: Any) -> None:
    _check(str(sender))


class CheckingPublisher(ChannelLayerPublisher):
    """The channel-layer publisher, checking that each event's row has committed."""

    def publish(self, run_id: Any, seq: int, type_: str, data_json: str | None) -> None:
        _check(f"event {type_}")
        super().publish(run_id, seq, type_, data_json)
