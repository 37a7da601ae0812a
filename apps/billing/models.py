from django.db import models


class Payment(models.Model):
    """A payment the demo's pay tool made; the unique key makes retries harmless."""

    idempotency_key = models.CharField(max_length=300, unique=True)
    invoice_id = models.CharField(max_length=50)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.invoice_id} {self.amount}"
