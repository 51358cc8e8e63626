"""Issue an API token for a user and print only the token, for scripts and CI."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from perfops.access.models import ApiToken, Scope
from perfops.access.roles import can_act


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it (the only time it is shown)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--scopes", required=True, help=f"Comma-separated: {', '.join(Scope.values)} (e.g. ingest,read)."
        )
        parser.add_argument("--name", default="", help="What uses the token (default: 'cli <scopes>').")
        parser.add_argument("--expires-in-days", type=int, default=None, help="Default: never expires.")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        try:
            user = user_model.objects.get(username=options["username"])
        except user_model.DoesNotExist:
            raise CommandError(f"No user named {options['username']!r}.") from None
        if not user.is_active:
            raise CommandError(f"User {user.username!r} is inactive.")
        scopes = sorted({scope.strip() for scope in options["scopes"].split(",") if scope.strip()})
        if Scope.AUTOMATION in scopes and not can_act(user):
            raise CommandError("The automation scope needs an engineer or a manager.")
        expires_at = None
        if options["expires_in_days"] is not None:
            if options["expires_in_days"] < 1:
                raise CommandError("--expires-in-days must be at least 1.")
            expires_at = timezone.now() + timedelta(days=options["expires_in_days"])
        try:
            _, plaintext = ApiToken.issue(
                user, name=options["name"] or f"cli {'+'.join(scopes)}", scopes=scopes, expires_at=expires_at
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(plaintext)
