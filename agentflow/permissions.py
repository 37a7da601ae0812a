"""Who may decide an approval or view a run: the permission, then the site's object rule.

Deciding needs ``agentflow.decide_approval``, granted globally or on the Approval object
(django-guardian answers object checks through Django's permission backends where it is
installed), and then ``AGENTFLOW["APPROVAL_RULE"](user, approval)`` and the run view rule
(below) must say yes. Viewing
a run (its page, its live events) needs ``agentflow.view_run`` the same way, then
``AGENTFLOW["RUN_VIEW_RULE"](user, run)``. The default rules let staff act on any run.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.utils.module_loading import import_string

from agentflow import conf

DECIDE = "agentflow.decide_approval"
VIEW = "agentflow.view_run"
# Starting a run from the console's "Start run" form, or a schedule's "run now".
START = "agentflow.start_run"


def staff_may_decide(user: Any, approval: Any) -> bool:
    """The default object rule: staff users may decide on any run."""
    return bool(user.is_staff)


def staff_may_view(user: Any, run: Any) -> bool:
    """The default object rule: staff users may view any run."""
    return bool(user.is_staff)


def _staff_view_queryset(user: Any, runs: QuerySet) -> QuerySet:
    return runs if user.is_staff else runs.none()


# A view rule may carry ``queryset(user, runs) -> runs``, the same rule as a filter, so
# admin lists narrow in SQL; a rule without one is asked run by run (see visible_runs).
staff_may_view.queryset = _staff_view_queryset  # type: ignore[attr-defined]


def _active(user: Any) -> bool:
    return user is not None and getattr(user, "is_authenticated", False) and user.is_active


def may_view(user: Any, run: Any) -> bool:
    """Whether ``user`` may see ``run``, its steps and its events."""
    return _allowed(user, VIEW, run, "RUN_VIEW_RULE")


def visible_runs(user: Any, runs: QuerySet) -> QuerySet:
    """The runs of ``runs`` that ``user`` may view: what every admin list and page shows.

    With the permission granted globally and a rule that carries ``queryset``, one SQL
    filter; otherwise every run is asked ``may_view`` (object permissions, or a rule with
    no queryset form), which reads the whole table: give a site's rule a ``queryset``.
    """
    if not _active(user):
        return runs.none()
    narrow = getattr(import_string(conf.setting("RUN_VIEW_RULE")), "queryset", None)
    if narrow is not None and user.has_perm(VIEW):
        return narrow(user, runs)
    allowed = [run.pk for run in runs.iterator(chunk_size=2000) if may_view(user, run)]
    return runs.filter(pk__in=allowed)


def may_decide(user: Any, approval: Any) -> bool:
    """Whether ``user`` may approve or reject ``approval``.

    The run view rule must admit its run too: a reviewer who may not see a run must not be
    able to steer it (the approval queue hides its approvals already).
    """
    return _allowed(user, DECIDE, approval, "APPROVAL_RULE") and bool(
        import_string(conf.setting("RUN_VIEW_RULE"))(user, approval.run)
    )


def _allowed(user: Any, permission: str, obj: Any, rule_setting: str) -> bool:
    """An active user with ``permission`` (global or on ``obj``) whom the site's rule admits."""
    if not _active(user):
        return False
    if not (user.has_perm(permission) or user.has_perm(permission, obj)):
        return False
    return bool(import_string(conf.setting(rule_setting))(user, obj))


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
