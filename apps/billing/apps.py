from django.apps import AppConfig


class BillingConfig(AppConfig):
    """The demo's example agents: reconcile a month of invoices and pay what is unmatched."""

    name = "apps.billing"
    label = "billing"
    default_auto_field = "django.db.models.BigAutoField"
