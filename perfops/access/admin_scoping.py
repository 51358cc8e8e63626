"""A ModelAdmin base that confines every list, form and object to the user's departments."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
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


class ConfirmedChangeAdmin(DepartmentScopedAdmin):
    """Saving asks first: a valid add or change form shows what it will do, then saves on confirmation.

    Subclasses say what to show in `describe` (an object with title, facts, rules, warnings). The
    confirmation page re-posts the same form data with `_confirmed`; nothing is stored before.
    """

    confirm_template = "admin/perfops/confirm.html"

    def describe(self, request: HttpRequest, candidate: Any) -> Any:
        raise NotImplementedError

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        form.user = request.user  # type: ignore[attr-defined]
        return form

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        if request.method == "POST" and "_confirmed" not in request.POST:
            obj = self.get_object(request, unquote(object_id)) if object_id else None
            if object_id and obj is None:
                raise Http404
            allowed = self.has_change_permission(request, obj) if obj else self.has_add_permission(request)
            if not allowed:
                raise PermissionDenied
            form = self.get_form(request, obj, change=obj is not None)(request.POST, request.FILES, instance=obj)
            if form.is_valid():
                preview = self.describe(request, form.save(commit=False))
                context = {
                    **self.admin_site.each_context(request),
                    "opts": self.opts,
                    "title": f"Confirm: {preview.title}",
                    "preview": preview,
                    "change": obj is not None,
                    "post_items": [
                        (key, value)
                        for key, values in request.POST.lists()
                        if key != "csrfmiddlewaretoken"
                        for value in values
                    ],
                }
                return TemplateResponse(request, self.confirm_template, context)
        return super().changeform_view(request, object_id, form_url, extra_context)


def confirm_action(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    title: str,
    preview: Any,
    action: str,
    selected: list[Any],
    *,
    ask_reason: bool = False,
) -> TemplateResponse:
    """The confirmation page of an admin action: what it will do; confirming re-posts the action."""
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": title,
        "preview": preview,
        "action": action,
        "selected": selected,
        "ask_reason": ask_reason,
    }
    return TemplateResponse(request, "admin/perfops/confirm_action.html", context)
