from django.apps import AppConfig
from django.core.signals import setting_changed


class AgentflowConfig(AppConfig):
    """Wire settings reloads and checks, then discover every app's ``agents.py``."""

    name = "agentflow"
    verbose_name = "Agent runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from agentflow import checks, conf, registry  # noqa: F401  (checks registers itself)
        from agentflow.gates import limits
        from agentflow.models import Policy

        setting_changed.connect(conf.reload, dispatch_uid="agentflow.conf.reload")
        for signal in (post_save, post_delete):
            signal.connect(
                limits.clear_cache, sender=Policy, dispatch_uid=f"agentflow.policy.{signal}"
            )
        registry.autodiscover()
