"""The demo site's project package; loading it creates the Celery app."""

from apps.project.celery import app as celery_app

__all__ = ["celery_app"]
