from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    """Departments, teams, agents, deployments and the traces they send."""

    name = "perfops.telemetry"
    label = "telemetry"
    verbose_name = "Telemetry"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from perfops.telemetry import audit  # noqa: F401  (auditlog registration)
        from perfops.telemetry.tasks import ensure_trace_partitions

        # Partitions for the whole retention window and the days ahead exist right after migrate.
        post_migrate.connect(
            lambda **kwargs: ensure_trace_partitions(),
            sender=self,
            dispatch_uid="perfops.telemetry.partitions",
            weak=False,
        )
