"""`Authorization: Bearer <token>` authentication and scope permissions for DRF."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from perfops.access.models import ApiToken, Scope, hash_token
from perfops.access.roles import can_act

if TYPE_CHECKING:
    from rest_framework.views import APIView


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
        token = ApiToken.objects.select_related("user").filter(token_hash=hash_token(plaintext)).first()
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
    """What a logged-in person (no token) may do: read always, automate if they can act, never ingest."""
    if scope == Scope.READ:
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


class IngestOrAutomationScope(permissions.BasePermission):
    """Deploy tools report deployments with either an ingest or an automation token."""

    message = "This operation needs the 'ingest' or 'automation' scope."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request_has_scope(request, Scope.INGEST) or request_has_scope(request, Scope.AUTOMATION)
