from django.apps import AppConfig


class MetricsConfig(AppConfig):
    """Latency sketches, rollups, the one query layer over them, the per-chart cache and retention."""

    name = "perfops.metrics"
    label = "metrics"
    verbose_name = "Metrics"

    def ready(self) -> None:
        from perfops.metrics import signals  # noqa: F401  (agent moves rebuild the pre-merged views)
