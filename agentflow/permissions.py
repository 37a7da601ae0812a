"""Who may decide an approval: the permission, then the site's object-level rule.

Deciding needs ``agentflow.decide_approval``, granted globally or on the Approval object
(django-guardian answers object checks through Django's permission backends where it is
installed), and then ``AGENTFLOW["APPROVAL_RULE"](user, approval)`` must say yes. The
default rule lets staff decide on any run.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.utils.module_loading import import_string

from agentflow import conf

DECIDE = "agentflow.decide_approval"


def staff_may_decide(user: Any, approval: Any) -> bool:
    """The default object rule: staff users may decide on any run."""
    return bool(user.is_staff)


def may_decide(user: Any, approval: Any) -> bool:
    """Whether ``user`` may approve or reject ``approval``."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if not (user.has_perm(DECIDE) or user.has_perm(DECIDE, approval)):
        return False
    rule = import_string(conf.setting("APPROVAL_RULE"))
    return bool(rule(user, approval))


def check_decide(user: Any, approval: Any) -> None:
    """Raise ``PermissionDenied`` naming what is missing; nothing is changed."""
    if may_decide(user, approval):
        return
    name = getattr(user, "get_username", lambda: "an anonymous user")()
    raise PermissionDenied(
        f"{name} may not decide approval {approval.id} of run {approval.run_id}: deciding "
        f"needs the permission {DECIDE} and the site's rule "
        f"({conf.setting('APPROVAL_RULE')}) to allow it."
    )
