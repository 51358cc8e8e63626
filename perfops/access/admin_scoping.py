"""A ModelAdmin base that confines every list, form and object to the user's departments."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.utils.functional import cached_property

from perfops.access.scoping import department_ids_for


class DepartmentScopedAdmin(admin.ModelAdmin):
    """Rows outside the user's departments do not exist for them: hidden from lists, 404 on direct links."""

    # Path from the model to its department's id, e.g. "department_id" or "agent__department_id".
    department_path = "department_id"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        ids = department_ids_for(request.user)
        if ids is None:
            return queryset
        return queryset.filter(**{f"{self.department_path}__in": ids})

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        ids = department_ids_for(request.user)
        if ids is not None:
            choices_within: dict[str, dict[str, object]] = {
                "department": {"pk__in": ids},
                "team": {"department_id__in": ids},
                "agent": {"department_id__in": ids},
                # An owner is someone of the person's own departments.
                "owner": {"departments__in": ids, "is_active": True},
            }
            scoped = choices_within.get(db_field.name)
            if scoped is not None:
                kwargs["queryset"] = db_field.related_model._default_manager.filter(**scoped).distinct()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def _get_obj_does_not_exist_redirect(self, request: HttpRequest, opts: Any, object_id: str) -> HttpResponseRedirect:
        # Django's default redirects with "doesn't exist"; another department's object answers 404 like the API.
        raise Http404


class CappedCountPaginator(Paginator):
    """Counts at most `cap` rows, so a changelist over millions of traces does not scan them all."""

    cap = 10_000

    @cached_property
    def count(self) -> int:
        object_list: Any = self.object_list
        if isinstance(object_list, QuerySet):
            return object_list.order_by()[: self.cap + 1].count()
        return len(object_list)


def scoped_to(user: Any, obj: Model | None, department_id: int | None) -> bool:
    """True when there is no object yet, or its department is in the user's scope."""
    if obj is None or department_id is None:
        return True
    ids = department_ids_for(user)
    return ids is None or department_id in ids
