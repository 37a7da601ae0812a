from django.apps import AppConfig


class ResearchConfig(AppConfig):
    """The demo's research agent: a cited brief from a corpus searched with full-text search."""

    name = "apps.research"
    label = "research"
    default_auto_field = "django.db.models.BigAutoField"
