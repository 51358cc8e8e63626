"""Department scoping: which departments' agents a person may see and act on."""

from __future__ import annotations

from typing import Any


def department_ids_for(user: Any) -> frozenset[int] | None:
    """The ids of the user's departments; None means all (superuser); empty for nobody.

    Memoised on the user object, which lives for one request.
    """
    if not user.is_authenticated or not user.is_active:
        return frozenset()
    if getattr(user, "is_superuser", False):
        return None
    cached: frozenset[int] | None = getattr(user, "_perfops_department_ids", None)
    if cached is None:
        cached = frozenset(user.departments.values_list("id", flat=True))
        user._perfops_department_ids = cached
    return cached


def may_access_department(user: Any, department_id: int) -> bool:
    """True when the user's scope includes the department."""
    ids = department_ids_for(user)
    return ids is None or department_id in ids
