"""`Authorization: Bearer <token>` authentication and scope permissions for DRF."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from perfops.access.models import ApiToken, Scope, hash_token
from perfops.access.roles import can_act

if TYPE_CHECKING:
    from rest_framework.views import APIView


# Ingest clients send dozens of requests a second with the same token. Each process remembers a
# looked-up token (and its user) for one second, which takes a query and an ORM round off every
# request; revoking a token, deactivating its user or changing their roles takes effect within that second.
TOKEN_MEMO_TTL_S = 1.0
_TOKEN_MEMO_LIMIT = 10_000
_token_memo: dict[str, tuple[ApiToken, float]] = {}


def forget_token_memo() -> None:
    """Drop the remembered tokens (tests; an admin action in another process cannot reach this one)."""
    _token_memo.clear()


_clock = time.monotonic  # tests move it forward


def _token_for(token_hash: str) -> ApiToken | None:
    clock = _clock()
    remembered = _token_memo.get(token_hash)
    if remembered is not None and clock - remembered[1] < TOKEN_MEMO_TTL_S:
        return remembered[0]
    token = ApiToken.objects.select_related("user").filter(token_hash=token_hash).first()
    if token is not None:
        if len(_token_memo) >= _TOKEN_MEMO_LIMIT:
            _token_memo.clear()
        _token_memo[token_hash] = (token, clock)
    return token


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """Resolve a bearer token to its user; unknown, expired and revoked tokens get 401."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: use 'Bearer <token>'.")
        try:
            plaintext = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        token = _token_for(hash_token(plaintext))
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        now = timezone.now()
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This token has been revoked.")
        if token.expires_at is not None and token.expires_at <= now:
            raise exceptions.AuthenticationFailed("This token has expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("The token's user is inactive.")
        token.touch(now)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="perfops"'


def session_has_scope(request: Request, scope: str) -> bool:
    """What a logged-in person (no token) may do: read always, automate if they can act, configure (what
    their model permissions allow, checked per operation), never ingest."""
    if scope in (Scope.READ, Scope.CONFIGURE):
        return True
    if scope == Scope.AUTOMATION:
        return can_act(request.user)
    return False


def request_has_scope(request: Request, scope: str) -> bool:
    """A token grants its scopes, but never more than its user's role: automation needs someone who can act."""
    if isinstance(request.auth, ApiToken):
        if scope == Scope.AUTOMATION and not can_act(request.user):
            return False
        return request.auth.has_scope(scope)
    return bool(request.user and request.user.is_authenticated) and session_has_scope(request, scope)


class _ScopePermission(permissions.BasePermission):
    scope: str = ""

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if not request_has_scope(request, self.scope):
            self.message = f"This operation needs the '{self.scope}' scope."
            return False
        return True


class IngestScope(_ScopePermission):
    scope = Scope.INGEST


class ReadScope(_ScopePermission):
    scope = Scope.READ


class AutomationScope(_ScopePermission):
    scope = Scope.AUTOMATION


class ConfigureScope(permissions.BasePermission):
    """Reads need `read` and the person's view permission (viewers do not see notification channels, whose
    URLs can hold credentials); writes need `configure` and the person's model permission for that operation
    (managers: SLOs, budgets, channels; engineers and managers: alert rules)."""

    ACTIONS = {"POST": "add", "PUT": "change", "PATCH": "change", "DELETE": "delete"}

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if request.method in permissions.SAFE_METHODS:
            if not request_has_scope(request, Scope.READ):
                self.message = "This operation needs the 'read' scope."
                return False
            action = "view"
        else:
            if not request_has_scope(request, Scope.CONFIGURE):
                self.message = "This operation needs the 'configure' scope."
                return False
            action = getattr(view, "permission_action", None) or self.ACTIONS.get(request.method or "", "change")
        model = view.get_queryset().model  # type: ignore[attr-defined]
        if not request.user.has_perm(f"{model._meta.app_label}.{action}_{model._meta.model_name}"):
            self.message = f"Your role may not {action} {model._meta.verbose_name_plural}."
            return False
        return True


class ReportDeployments(permissions.BasePermission):
    """Deploy tools report deployments with an ingest or automation token of someone who can act."""

    message = "Reporting deployments needs the 'ingest' or 'automation' scope, held by an engineer or a manager."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not (request.user and request.user.is_authenticated and can_act(request.user)):
            return False
        return request_has_scope(request, Scope.INGEST) or request_has_scope(request, Scope.AUTOMATION)
