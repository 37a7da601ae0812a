from django.db import models


class Payment(models.Model):
    """A payment the demo's pay tool made; the unique key makes retries harmless."""

    idempotency_key = models.CharField(max_length=300, unique=True)
    invoice_id = models.CharField(max_length=50)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.invoice_id} {self.amount}"


class Invoice(models.Model):
    """An invoice the company sent; the demo's migrations load a month of them."""

    number = models.CharField(max_length=50, unique=True)
    customer = models.CharField(max_length=200)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    period = models.CharField(max_length=7, db_index=True, help_text="YYYY-MM")

    def __str__(self) -> str:
        return f"{self.number} {self.customer} {self.amount}"


class BankTransaction(models.Model):
    """A credit on the bank statement, referencing the invoice it pays (as customers write it)."""

    reference = models.CharField(max_length=50, db_index=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    period = models.CharField(max_length=7, db_index=True, help_text="YYYY-MM")
    booked_on = models.DateField()

    def __str__(self) -> str:
        return f"{self.reference} {self.amount} on {self.booked_on}"
