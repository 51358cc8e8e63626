"""The metrics tests' fleet, rolled up, for reports and chart annotations."""

from tests.metrics.conftest import rolled_up, traffic  # noqa: F401  (fixtures)
