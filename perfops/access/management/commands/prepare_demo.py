"""Demo accounts: an admin, one person per role, and an ingest token for the traffic simulator."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from perfops.access.audit import one_entry_per_object
from perfops.access.models import AllowedHost, ApiToken, Scope
from perfops.access.roles import Role
from perfops.telemetry.models import Department

INGEST_USER = "demo-ingest"


class Command(BaseCommand):
    help = "Create (or refresh) the demo accounts and print their credentials; write the simulator's token to var/."

    @one_entry_per_object()  # a new person and their role: one audit entry
    def handle(self, *args: Any, **options: Any) -> None:
        var_dir = Path(settings.VAR_DIR)
        password = self._password(var_dir / "demo-password")
        user_model = get_user_model()
        admin, _ = user_model.objects.get_or_create(username="admin", defaults={"email": "admin@example.com"})
        admin.is_staff = admin.is_superuser = True
        admin.set_password(password)
        admin.save()

        departments = list(Department.objects.exclude(slug=Department.UNASSIGNED).order_by("name"))
        people = [("maria", Role.MANAGER), ("erin", Role.ENGINEER), ("victor", Role.VIEWER)]
        for username, role in people:
            person, _ = user_model.objects.get_or_create(username=username)
            person.is_staff = True
            person.set_password(password)
            person.save()
            person.groups.set([Group.objects.get(name=role)])
            # The personas share the first department, so the demo shows department scoping at work.
            if departments:
                departments[0].members.add(person)

        ingest_user, _ = user_model.objects.get_or_create(username=INGEST_USER)
        ingest_user.set_unusable_password()
        ingest_user.save()
        for department in departments:
            department.members.add(ingest_user)
        token_file = var_dir / "demo-ingest-token"
        # One save per token, so each revocation has its audit entry (an update() would write none).
        for old in ApiToken.objects.filter(user=ingest_user, name="demo simulator", revoked_at__isnull=True):
            old.revoke()
        _, plaintext = ApiToken.issue(ingest_user, name="demo simulator", scopes=[Scope.INGEST])
        token_file.write_text(plaintext)
        token_file.chmod(0o600)

        from slos import demo

        # The demo's simulated agents answer on loopback: load tests may target them (and nothing else private).
        AllowedHost.objects.get_or_create(
            host="127.0.0.1",
            defaults={"allow_private": True, "note": "demo: the simulated agents of `manage.py simulate`"},
        )

        for line in demo.seed(admin):
            self.stdout.write(f"Demo objective: {line}")

        scope = departments[0].name if departments else "no department yet"
        self.stdout.write(
            self.style.SUCCESS("Demo accounts (password for all: " + password + ")")
            + f"\n  admin   superuser, sees everything"
            f"\n  maria   manager of {scope}\n  erin    engineer of {scope}\n  victor  viewer of {scope}"
        )

    def _password(self, path: Path) -> str:
        """One random password per demo install, kept in var/ so re-running `make demo` keeps it."""
        if path.exists():
            return path.read_text().strip()
        password = secrets.token_urlsafe(12)
        path.write_text(password)
        path.chmod(0o600)
        return password
