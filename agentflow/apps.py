from django.apps import AppConfig
from django.core.signals import setting_changed


class AgentflowConfig(AppConfig):
    """Wire settings reloads and checks, then discover every app's ``agents.py``."""

    name = "agentflow"
    verbose_name = "Agent runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from agentflow import (  # noqa: F401  (the checks modules register themselves)
            _channel_checks,
            _checks,
            _registry,
            _site_checks,
            conf,
        )
        from agentflow._guardrails import budgets, policy, redaction
        from agentflow.models import Budget, Policy

        # The gates' caches register with conf.on_reload as they are imported (above).
        setting_changed.connect(conf.reload, dispatch_uid="agentflow.conf.reload")
        for signal in (post_save, post_delete):
            signal.connect(
                policy.clear_cache, sender=Policy, dispatch_uid=f"agentflow.policy.{signal}"
            )
            signal.connect(
                redaction.clear_cache,
                sender=Policy,
                dispatch_uid=f"agentflow.redaction.{signal}",
            )
            signal.connect(
                budgets.clear_cache, sender=Budget, dispatch_uid=f"agentflow.budget.{signal}"
            )
        _registry.autodiscover()
