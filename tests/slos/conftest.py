"""The metrics tests' fleet, rolled up, for SLO evaluation, and one agent's availability SLO."""

import pytest

from slos.models import SLO
from tests import factories
from tests.metrics.conftest import rolled_up, traffic  # noqa: F401  (fixtures)


@pytest.fixture
def slo(payments) -> SLO:
    """pay-bot's 99.9% availability over 30 days (with its four burn-rate rules)."""
    agent = factories.agent("pay-bot", payments)
    return SLO.objects.create(
        name="pay-bot availability",
        scope="agent",
        agent=agent,
        department=payments,
        kind="availability",
        target=0.999,
        window_days=30,
    )
