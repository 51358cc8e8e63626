"""Audit registration: token issue, expiry changes and revocation are logged, never the hash."""

from auditlog.registry import auditlog

from perfops.access.models import ApiToken

auditlog.register(ApiToken, exclude_fields=["token_hash", "last_used_at"])
