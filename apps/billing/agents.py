"""The demo agent: reconcile a month of invoices against the bank statement (seed 001).

It gathers the invoices and bank credits of a period from the demo tables, matches them in a
fan-out, asks the model to explain each mismatch and propose a fix, then pays what is still
owed through an idempotent tool. A Policy row (loaded by the migrations, editable in the
admin) asks a person to approve any payment over 250 first. The model is a scripted
stand-in unless an OpenAI-compatible endpoint is configured (see the project settings).
"""

import json
from collections import defaultdict
from decimal import Decimal

from agentflow import RunContext, agent, tool
from apps.billing.models import BankTransaction, Invoice, Payment

EXPLAIN = (
    "You reconcile invoices against a bank statement. The user gives one invoice that does "
    "not match and the credits found for it. Explain the likely cause in two sentences and "
    "propose a fix."
)


@tool
def fetch_invoices(period: str) -> list[dict]:
    """Return the invoices of a period (YYYY-MM)."""
    rows = Invoice.objects.filter(period=period).order_by("number")
    return [{"id": i.number, "customer": i.customer, "amount": str(i.amount)} for i in rows]


@tool
def fetch_credits(period: str) -> list[dict]:
    """Return the bank statement's credits of a period, with the reference each carries."""
    rows = BankTransaction.objects.filter(period=period).order_by("booked_on", "id")
    return [
        {"reference": t.reference, "amount": str(t.amount), "booked_on": t.booked_on.isoformat()}
        for t in rows
    ]


@tool(rate_limit="20/s", max_concurrency=4)
def match_invoice(invoice: dict, credits: list[dict]) -> dict:
    """Compare an invoice with the credits that reference it."""
    due = Decimal(invoice["amount"])
    paid = sum((Decimal(c["amount"]) for c in credits), Decimal("0"))
    if not credits:
        status = "unpaid"
    elif len(credits) > 1 and paid > due:
        status = "paid twice"
    elif paid < due:
        status = "short-paid"
    elif paid > due:
        status = "overpaid"
    else:
        status = "matched"
    return {
        **invoice,
        "paid": str(paid),
        "credits": len(credits),
        "status": status,
        "outstanding": str(max(due - paid, Decimal("0"))),
        "excess": str(max(paid - due, Decimal("0"))),
    }


@tool(name="billing.pay", retries=3, timeout=30, approval_title="Pay {invoice_id}: {amount}")
def pay(invoice_id: str, amount: str, *, idempotency_key: str) -> dict:
    """Pay an invoice once, whatever happens to the worker: the key makes it idempotent."""
    payment, created = Payment.objects.get_or_create(
        idempotency_key=idempotency_key,
        defaults={"invoice_id": invoice_id, "amount": Decimal(amount)},
    )
    return {"payment": payment.pk, "invoice": invoice_id, "new": created}


def total(amounts: list[str]) -> str:
    return str(sum((Decimal(a) for a in amounts), Decimal("0")))


@agent(name="billing.reconcile", version="2")
def reconcile(ctx: RunContext, period: str = "2026-10", settle_seconds: float = 1.0) -> dict:
    """Gather, match in parallel, explain the mismatches, then pay what is owed."""
    ctx.emit("progress", {"stage": "gathering", "period": period})
    invoices = ctx.call(fetch_invoices, period=period)
    by_reference = defaultdict(list)
    for credit in ctx.call(fetch_credits, period=period):
        by_reference[credit["reference"]].append(credit)
    matches = ctx.map(
        match_invoice,
        [{"invoice": invoice, "credits": by_reference[invoice["id"]]} for invoice in invoices],
    )
    mismatches = [m for m in matches if m["status"] != "matched"]
    explanations = {}
    for mismatch in mismatches:
        credits = by_reference[mismatch["id"]]
        answer = ctx.llm(
            [
                {"role": "system", "content": EXPLAIN},
                {"role": "user", "content": json.dumps({"invoice": mismatch, "credits": credits})},
            ],
            max_tokens=200,
        )
        explanations[mismatch["id"]] = {"model": answer.model, "text": answer.text}
    ctx.emit("progress", {"stage": "waiting for settlement", "mismatches": len(mismatches)})
    ctx.sleep(settle_seconds)  # late credits of the period land before anything is paid
    owed = [m for m in mismatches if Decimal(m["outstanding"]) > 0]
    paid = [ctx.call(pay, invoice_id=m["id"], amount=m["outstanding"]) for m in owed]
    return {
        "period": period,
        "invoices": len(invoices),
        "matched": len(matches) - len(mismatches),
        "mismatches": {m["id"]: m["status"] for m in mismatches},
        "paid": [p["invoice"] for p in paid],
        "total_paid": ctx.step(total, [m["outstanding"] for m in owed]),
        "to_refund": [m["id"] for m in mismatches if Decimal(m["excess"]) > 0],
        "explanations": explanations,
    }
