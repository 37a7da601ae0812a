from django.apps import AppConfig
from django.core.signals import setting_changed


class AgentflowConfig(AppConfig):
    """Wire settings reloads and checks, then discover every app's ``agents.py``."""

    name = "agentflow"
    verbose_name = "Agent runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agentflow import checks, conf, registry  # noqa: F401  (checks registers itself)

        setting_changed.connect(conf.reload, dispatch_uid="agentflow.conf.reload")
        registry.autodiscover()
