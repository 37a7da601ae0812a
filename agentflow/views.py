"""HTTP endpoints: deciding approvals (the admin's Approve/Reject buttons post here).

Every view checks the user and the permission, and every POST is CSRF-protected by
Django's middleware. Answers are JSON with a message that says what happened.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from agentflow import api
from agentflow.exceptions import AlreadyDecided, InvalidInput
from agentflow.models import Approval

DECISIONS = ("approve", "reject")


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@require_POST
def decide(request: HttpRequest, approval_id: int) -> JsonResponse:
    """POST ``decision`` (approve|reject), optional ``comment`` and ``data`` (JSON text).

    200 with the approval's new status; 400 for bad input (naming the problem, e.g. the
    schema path); 403 without the permission; 404 for an unknown approval; 409 when the
    approval was already decided.
    """
    if not request.user.is_authenticated:
        return _error("Log in to decide approvals.", 403)
    decision = request.POST.get("decision", "")
    if decision not in DECISIONS:
        return _error(f"decision must be 'approve' or 'reject', not {decision!r}.", 400)
    comment = request.POST.get("comment", "")
    if not Approval.objects.filter(id=approval_id).exists():
        return _error(f"There is no approval {approval_id}.", 404)
    try:
        data = _data(request.POST.get("data", ""))
        if decision == "approve":
            approval = api.approve(approval_id, by=request.user, data=data, comment=comment)
        elif data is not None:
            return _error("A rejection carries no data; send only a comment.", 400)
        else:
            approval = api.reject(approval_id, by=request.user, comment=comment)
    except PermissionDenied as exc:
        return _error(str(exc), 403)
    except AlreadyDecided as exc:
        return _error(str(exc), 409)
    except InvalidInput as exc:
        return _error(str(exc), 400)
    return JsonResponse(
        {"approval": approval.id, "status": approval.status, "run": str(approval.run_id)}
    )


def _data(text: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"data is not valid JSON: {exc.msg} at character {exc.pos}.") from None
