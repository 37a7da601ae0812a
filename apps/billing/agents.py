"""The demo agent: reconcile a month of invoices against the bank, and pay the unmatched.

Everything runs locally on made-up data. The model that explains each mismatch is a scripted
stand-in unless an OpenAI-compatible endpoint is configured (see the project settings).
"""

import json
from decimal import Decimal

from agentflow import RunContext, agent, tool
from apps.billing.models import Payment

LEDGER = {
    "2026-10": [
        {"id": "INV-1001", "customer": "Acme", "amount": "120.00"},
        {"id": "INV-1002", "customer": "Globex", "amount": "80.50"},
        {"id": "INV-1003", "customer": "Initech", "amount": "42.00"},
        {"id": "INV-1004", "customer": "Umbrella", "amount": "310.25"},
    ],
}
BANK_STATEMENT = {"INV-1001", "INV-1003"}
EXPLAIN = (
    "You reconcile invoices against a bank statement. The user gives one invoice with no "
    "matching transaction. Explain the likely cause in two sentences and propose a fix."
)


@tool
def fetch_invoices(period: str) -> list[dict]:
    """Return the invoices of a period (YYYY-MM)."""
    return LEDGER.get(period, [])


@tool(rate_limit="20/s", max_concurrency=4)
def match_invoice(invoice: dict) -> dict:
    """Look the invoice up on the bank statement."""
    return {
        "id": invoice["id"],
        "amount": invoice["amount"],
        "matched": invoice["id"] in BANK_STATEMENT,
    }


@tool(name="billing.pay", retries=3, timeout=30)
def pay(invoice_id: str, amount: str, *, idempotency_key: str) -> dict:
    """Pay an invoice once, whatever happens to the worker: the key makes it idempotent."""
    payment, created = Payment.objects.get_or_create(
        idempotency_key=idempotency_key,
        defaults={"invoice_id": invoice_id, "amount": Decimal(amount)},
    )
    return {"payment": payment.pk, "invoice": invoice_id, "new": created}


def total(amounts: list[str]) -> str:
    return str(sum((Decimal(a) for a in amounts), Decimal("0")))


@agent(name="billing.reconcile", version="1")
def reconcile(ctx: RunContext, period: str = "2026-10", settle_seconds: float = 1.0) -> dict:
    """Fetch, match in parallel, wait for the bank's settlement window, pay the unmatched."""
    ctx.emit("progress", {"stage": "fetching invoices", "period": period})
    invoices = ctx.call(fetch_invoices, period=period)
    matches = ctx.map(match_invoice, [{"invoice": invoice} for invoice in invoices])
    unmatched = [m for m in matches if not m["matched"]]
    explanations = {}
    if ctx.patched("explain-mismatches"):  # runs started before this code skip it
        for mismatch in unmatched:
            answer = ctx.llm(
                [
                    {"role": "system", "content": EXPLAIN},
                    {"role": "user", "content": json.dumps(mismatch)},
                ],
                max_tokens=200,
            )
            explanations[mismatch["id"]] = {"model": answer.model, "text": answer.text}
    ctx.emit("progress", {"stage": "waiting for settlement", "unmatched": len(unmatched)})
    ctx.sleep(settle_seconds)
    paid = [ctx.call(pay, invoice_id=m["id"], amount=m["amount"]) for m in unmatched]
    return {
        "period": period,
        "invoices": len(invoices),
        "matched": len(matches) - len(unmatched),
        "paid": [p["invoice"] for p in paid],
        "total_paid": ctx.step(total, [m["amount"] for m in unmatched]),
        "explanations": explanations,
    }
