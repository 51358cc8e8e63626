"""The metrics tests' fleet (four agents, two departments, 2,500 traces over nine days), rolled up."""

from tests.metrics.conftest import rolled_up, traffic  # noqa: F401  (fixtures used by the dashboard tests)
