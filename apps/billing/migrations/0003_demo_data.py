"""The demo's month of invoices and bank credits, with real mismatches, and its payment policy.

October 2026: 30 invoices. The bank statement pays most of them exactly; INV-2004, INV-2011
and INV-2028 are unpaid, INV-2017 is short-paid by 45.00 and INV-2023 was paid twice. A
Policy row asks for a person's approval before billing.pay pays more than 250.
"""

from datetime import date
from decimal import Decimal

from django.db import migrations, router

PERIOD = "2026-10"
CUSTOMERS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell"]
UNPAID = {4: Decimal("80.50"), 11: Decimal("310.25"), 28: Decimal("42.00")}
SHORT = {17: (Decimal("145.00"), Decimal("100.00"))}
TWICE = {23}
POLICY = "billing: approve payments over 250"


def amount_of(i: int) -> Decimal:
    if i in UNPAID:
        return UNPAID[i]
    if i in SHORT:
        return SHORT[i][0]
    return Decimal(50 + (i * 37) % 200) + Decimal("0.25") * (i % 4)


def holds(schema_editor, model) -> bool:
    """Whether the database being migrated holds ``model``.

    A site whose router puts agentflow on a database of its own (tests.settings_two_databases)
    migrates billing elsewhere: there the policy is for an operator to add in the admin.
    Called outside a migration (no schema editor, as the tests' fixture does), it is the
    site's one database.
    """
    if schema_editor is None:
        return True
    return router.allow_migrate_model(schema_editor.connection.alias, model)


def load(apps, schema_editor):
    Invoice = apps.get_model("billing", "Invoice")
    BankTransaction = apps.get_model("billing", "BankTransaction")
    Policy = apps.get_model("agentflow", "Policy")
    for i in range(1, 31):
        number = f"INV-{2000 + i}"
        amount = amount_of(i)
        Invoice.objects.create(
            number=number, customer=CUSTOMERS[i % len(CUSTOMERS)], amount=amount, period=PERIOD
        )
        if i in UNPAID:
            continue
        paid = SHORT[i][1] if i in SHORT else amount
        for times in range(2 if i in TWICE else 1):
            BankTransaction.objects.create(
                reference=number, amount=paid, period=PERIOD, booked_on=date(2026, 10, i + times)
            )
    if not holds(schema_editor, Policy):
        return
    Policy.objects.get_or_create(
        name=POLICY,
        defaults={"tool": "billing.pay", "effect": "approve", "condition": "amount > 250"},
    )


def unload(apps, schema_editor):
    apps.get_model("billing", "Invoice").objects.filter(period=PERIOD).delete()
    apps.get_model("billing", "BankTransaction").objects.filter(period=PERIOD).delete()
    Policy = apps.get_model("agentflow", "Policy")
    if holds(schema_editor, Policy):
        Policy.objects.filter(name=POLICY).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_ledger"),
        ("agentflow", "0005_run_has_own_budget"),
    ]

    operations = [migrations.RunPython(load, unload)]
