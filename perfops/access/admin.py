"""API tokens in the admin: issue (the secret is shown once, never stored), expire, revoke."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from perfops.access.models import AllowedHost, ApiToken, Scope, validate_scopes
from perfops.access.roles import can_act


class ApiTokenForm(forms.ModelForm):
    # Who is issuing: a new token without a user field belongs to them.
    issuer: Any = None

    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiToken
        fields = ["user", "name", "scopes", "expires_at"]

    def clean_scopes(self) -> list[str]:
        scopes = sorted(set(self.cleaned_data["scopes"]))
        validate_scopes(scopes)
        return scopes

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        user = data.get("user") or (self.instance.user if self.instance.user_id else self.issuer)
        if user is not None and Scope.AUTOMATION in data.get("scopes", []) and not can_act(user):
            self.add_error("scopes", "The automation scope needs an engineer or a manager; this user is a viewer.")
        expires_at = data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now() and not self.instance.pk:
            self.add_error("expires_at", "A new token must expire in the future.")
        return data


@admin.action(description="Revoke the selected tokens now")
def revoke_tokens(modeladmin: ApiTokenAdmin, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
    count = 0
    for token in queryset.filter(revoked_at__isnull=True):
        token.revoke()  # one save per token, so each revocation has its own audit entry
        count += 1
    messages.success(request, f"Revoked {count} token(s).")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = [
        "name",
        "user",
        "prefix",
        "scope_list",
        "state",
        "created_at",
        "expires_at",
        "last_used_at",
    ]
    list_filter = ["revoked_at", "expires_at"]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = [revoke_tokens]
    list_select_related = ["user"]

    @admin.display(description="scopes")
    def scope_list(self, token: ApiToken) -> str:
        return ", ".join(token.scopes)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiToken]:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(user=request.user)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None or not request.user.is_superuser:
            fields.append("user")
        return fields

    def get_form(self, request: HttpRequest, obj: ApiToken | None = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"issuer": request.user})

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if not change:
            if not request.user.is_superuser:
                obj.user = request.user  # type: ignore[assignment]
            plaintext = ApiToken.new_plaintext()
            obj.set_secret(plaintext)
            request._perfops_new_token = plaintext  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None) -> HttpResponse:
        plaintext = getattr(request, "_perfops_new_token", None)
        if plaintext is None:
            return super().response_add(request, obj, post_url_continue)
        # Rendered directly, not put in a message: messages may sit in a cookie, the secret must not.
        context = {
            **self.admin_site.each_context(request),
            "token": obj,
            "plaintext": plaintext,
            "opts": self.model._meta,
            "title": "Copy your new token",
        }
        response = TemplateResponse(request, "admin/access/apitoken/issued.html", context)
        response["Cache-Control"] = "no-store"
        return response


@admin.register(AllowedHost)
class AllowedHostAdmin(admin.ModelAdmin):
    """Superusers decide which hosts perfops may call; everyone else cannot even see the list."""

    list_display = ["host", "allow_private", "note", "created_at"]
    search_fields = ["host", "note"]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)
