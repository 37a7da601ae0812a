"""HTTP endpoints: deciding approvals (the admin's Approve/Reject buttons post here).

Every view checks the user and the permission, and every POST is CSRF-protected by
Django's middleware. Answers are JSON with a message that says what happened.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from agentflow import _api as api
from agentflow import permissions
from agentflow._engine.serialize import parse
from agentflow.exceptions import AlreadyDecided, InvalidInput, PayloadError
from agentflow.models import Approval

DECISIONS = ("approve", "reject")
# One answer whether the approval exists or not, so it tells a refused user nothing.
REFUSED = (
    f"You may not decide this approval: deciding needs the permission {permissions.DECIDE} "
    "and the site's approval rule to allow it. Ask an administrator for access."
)


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@require_POST
def decide(request: HttpRequest, approval_id: int) -> JsonResponse:
    """POST ``decision`` (approve|reject), optional ``comment`` and ``data`` (JSON text).

    200 with the approval's new status; 403 without the permission (the same answer
    whether or not the approval exists); 404 for an unknown approval, to users who hold
    the permission; 400 for bad input (naming the problem, e.g. the schema path); 409 when
    the approval was already decided. Nothing is read from the request before the
    permission is checked.
    """
    user = request.user
    if not user.is_authenticated:
        return _error("Log in to decide approvals.", 403)
    approval = Approval.objects.filter(id=approval_id).first()
    if approval is None and _permitted(user):
        return _error(f"There is no approval {approval_id}.", 404)
    if approval is None or not permissions.may_decide(user, approval):
        return _error(REFUSED, 403)
    decision = request.POST.get("decision", "")
    if decision not in DECISIONS:
        return _error(f"decision must be 'approve' or 'reject', not {decision!r}.", 400)
    comment = request.POST.get("comment", "")
    try:
        data = _data(request.POST.get("data", ""))
        if decision == "approve":
            approval = api.approve(approval, by=user, data=data, comment=comment)
        elif data is not None:
            return _error("A rejection carries no data; send only a comment.", 400)
        else:
            approval = api.reject(approval, by=user, comment=comment)
    except PermissionDenied:  # the rule changed its mind since the check above
        return _error(REFUSED, 403)
    except AlreadyDecided as exc:
        return _error(str(exc), 409)
    except (InvalidInput, PayloadError) as exc:
        return _error(str(exc), 400)
    return JsonResponse(
        {"approval": approval.id, "status": approval.status, "run": str(approval.run_id)}
    )


def _permitted(user: Any) -> bool:
    """Whether ``user`` holds the decide permission globally (no approval to ask the rule)."""
    return user.is_active and user.has_perm(permissions.DECIDE)


def _data(text: str) -> Any:
    return parse(text, what="data") if text.strip() else None
