"""The demo's scripted model: explains a mismatch from the invoice in the prompt.

Deterministic, so the demo and its test need no network; a real endpoint replaces it
when one is configured (see the project settings).
"""

from __future__ import annotations

import json
from typing import Any

FIXES = {
    "unpaid": "No credit references it: most likely it is still unpaid. Fix: pay {outstanding}.",
    "short-paid": "The customer paid {paid} of {amount}, perhaps after a deduction. Fix: pay "
    "the {outstanding} still owed, or issue a credit note if the deduction was agreed.",
    "paid twice": "It was credited {credits} times for {paid}: a duplicate payment. Fix: refund "
    "the {excess} paid too much.",
    "overpaid": "The customer paid {paid} for {amount}. Fix: refund the {excess} paid too much.",
}


def explain(messages: list[dict[str, Any]], tools: list[str]) -> dict[str, Any]:
    """A short explanation and a proposed fix for the invoice in the last message."""
    invoice = json.loads(messages[-1]["content"])["invoice"]
    fix = FIXES.get(invoice["status"], "Check it by hand.").format(**invoice)
    return {"text": f"Invoice {invoice['id']} ({invoice['customer']}, {invoice['amount']}) is "
            f"{invoice['status']}. {fix}"}  # fmt: skip
