"""API tokens: random bearer secrets stored only as a SHA-256 hash, with scopes and expiry."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

TOKEN_PREFIX = "pfo_"  # noqa: S105  (a public marker that makes leaked tokens greppable)


class Scope(models.TextChoices):
    INGEST = "ingest", "ingest: send traces and deployments"
    READ = "read", "read: metrics, agents, traces"
    AUTOMATION = "automation", "automation: interventions (profiling, config, load tests, ...)"
    CONFIGURE = "configure", "configure: SLOs, alert rules, notification channels, budgets"


def hash_token(plaintext: str) -> str:
    """The stored form of a token. Tokens carry 256 random bits, so a fast hash is enough."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def validate_scopes(value: object) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError("Choose at least one scope.")
    unknown = [scope for scope in value if scope not in Scope.values]
    if unknown:
        raise ValidationError(f"Unknown scope(s): {', '.join(map(str, unknown))}.")


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self, now: datetime | None = None) -> ApiTokenQuerySet:
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).exclude(expires_at__lte=now)


class ApiToken(models.Model):
    """A bearer token that acts as its user, limited to its scopes and the user's departments."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What uses it, e.g. 'otel-collector prod' or 'CI deploy gate'.")
    prefix = models.CharField(max_length=12, editable=False, help_text="The first characters, to recognise it.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, validators=[validate_scopes])
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, user: Any, name: str, scopes: list[str], expires_at: datetime | None = None) -> tuple[ApiToken, str]:
        """Create a token and return it with its plaintext, which is never stored or shown again."""
        validate_scopes(scopes)
        plaintext = cls.new_plaintext()
        token = cls(user=user, name=name, scopes=sorted(set(scopes)), expires_at=expires_at)
        token.set_secret(plaintext)
        token.save()
        return token, plaintext

    @staticmethod
    def new_plaintext() -> str:
        return TOKEN_PREFIX + secrets.token_urlsafe(32)

    def set_secret(self, plaintext: str) -> None:
        self.prefix = plaintext[: len(TOKEN_PREFIX) + 6]
        self.token_hash = hash_token(plaintext)

    def is_usable(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "active"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def revoke(self) -> None:
        """Revoke now; the token stops working on its next request."""
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    def touch(self, now: datetime) -> None:
        """Record use at most once a minute, so a busy ingest client does not write on every request."""
        if self.last_used_at is None or now - self.last_used_at > timedelta(minutes=1):
            ApiToken.objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now


class AllowedHost(models.Model):
    """A host perfops may call (webhooks, load-test targets): nothing else is ever contacted.

    `*.example.com` allows every name under example.com (not example.com itself). Addresses in
    private, loopback, link-local, shared and metadata ranges are refused even for an allowed host,
    unless `allow_private` says this host is meant to be internal.
    """

    host = models.CharField(max_length=253, unique=True, help_text="A host name or IP, or *.domain for its subdomains.")
    allow_private = models.BooleanField(
        default=False, help_text="Also allow private, loopback and link-local addresses for this host."
    )
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["host"]

    def __str__(self) -> str:
        return self.host + (" (private allowed)" if self.allow_private else "")

    def clean(self) -> None:
        host = self.host.strip().lower().rstrip(".")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        bare = host.removeprefix("*.")
        try:
            ipaddress.ip_address(bare)
            valid = bare == host  # no wildcard over an address
        except ValueError:
            try:
                bare = bare.encode("idna").decode("ascii")
            except UnicodeError:
                bare = ""
            valid = bool(re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*", bare))
            host = ("*." if host.startswith("*.") else "") + bare
        if not valid:
            raise ValidationError({"host": "A host name, an IP address, or *.domain."})
        self.host = host

    def matches(self, host: str) -> bool:
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host
