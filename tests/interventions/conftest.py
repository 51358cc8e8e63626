"""The metrics tests' fleet, rolled up, for the reports."""

from tests.metrics.conftest import rolled_up, traffic  # noqa: F401  (fixtures)
