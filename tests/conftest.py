"""Personas and clients shared by every test folder."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from interventions.profiling import forget_active as forget_active_profiling
from perfops.access.authentication import forget_token_memo
from perfops.access.roles import Role
from perfops.telemetry.ingest.store import forget_ingest_memos
from perfops.telemetry.models import Agent, Department
from perfops.telemetry.partitions import forget_known_partitions
from tests import factories


@pytest.fixture(autouse=True)
def _fresh_process_memos():
    # Each test's transaction rolls back the partitions, agents and deployments it created.
    forget_known_partitions()
    forget_ingest_memos()
    forget_token_memo()
    forget_active_profiling()
    yield
    forget_known_partitions()
    forget_ingest_memos()
    forget_token_memo()
    forget_active_profiling()


@pytest.fixture
def payments(db) -> Department:
    return factories.department("payments", "Payments")


@pytest.fixture
def research(db) -> Department:
    return factories.department("research", "Research")


@pytest.fixture
def superuser(db) -> User:
    return User.objects.create_superuser("root", "root@example.com", "pw-root")


@pytest.fixture
def manager(payments) -> User:
    return factories.user("maria", Role.MANAGER, [payments])


@pytest.fixture
def engineer(payments) -> User:
    return factories.user("erin", Role.ENGINEER, [payments])


@pytest.fixture
def viewer(payments) -> User:
    return factories.user("victor", Role.VIEWER, [payments])


@pytest.fixture
def outsider(research) -> User:
    """An engineer of another department."""
    return factories.user("olga", Role.ENGINEER, [research])


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def ingest_token(engineer) -> str:
    return factories.token(engineer, ["ingest"])


@pytest.fixture
def ingest_api(ingest_token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ingest_token}")
    return client


@pytest.fixture
def agent(payments) -> Agent:
    """pay-bot, an agent of payments."""
    return factories.agent("pay-bot", payments)
