"""The demo's scripted model: explains a mismatch from the invoice in the prompt.

Deterministic, so the demo and its test need no network; a real endpoint replaces it
when one is configured (see the project settings).
"""

from __future__ import annotations

import json
from typing import Any


def explain(messages: list[dict[str, Any]], tools: list[str]) -> dict[str, Any]:
    """A short explanation and a proposed fix for the unmatched invoice in the last message."""
    invoice = json.loads(messages[-1]["content"])
    return {
        "text": (
            f"Invoice {invoice['id']} ({invoice['amount']}) has no matching bank transaction "
            "in the period. Most likely it is still unpaid. Proposed fix: pay it through "
            "billing.pay, which is idempotent, so a retry cannot pay twice."
        )
    }
