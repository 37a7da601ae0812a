"""``Schedule``: agentflow's view of the django-celery-beat rows that start its agents.

A proxy model, so no table of its own: it gives schedules a place in the admin index and
permissions of their own (``agentflow.view_schedule`` and so on). ``agentflow.schedule``
still writes and returns plain ``PeriodicTask`` rows.
"""

from __future__ import annotations

from django.db import models
from django_celery_beat.models import PeriodicTask

# The Celery task of every agentflow schedule (agentflow.schedules.TASK names it too).
TASK = "agentflow.start_scheduled"


class ScheduleQuerySet(models.QuerySet):
    """Only the periodic tasks that start agentflow runs."""


class ScheduleManager(models.Manager.from_queryset(ScheduleQuerySet)):  # type: ignore[misc]
    def get_queryset(self) -> ScheduleQuerySet:
        return super().get_queryset().filter(task=TASK)


class Schedule(PeriodicTask):
    """A recurring agent: a ``PeriodicTask`` whose task is ``agentflow.start_scheduled``."""

    objects = ScheduleManager()

    class Meta:
        proxy = True
        verbose_name = "schedule"
        verbose_name_plural = "schedules"
