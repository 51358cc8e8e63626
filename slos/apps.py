from django.apps import AppConfig


class SlosConfig(AppConfig):
    """SLOs, error budgets and burn rates, alert rules and channels, performance budgets."""

    name = "slos"
    verbose_name = "SLOs and alerts"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from slos import signals  # noqa: F401  (an SLO brings its alert rules)
        from slos.models import SLO, AlertEvent, AlertRule, NotificationChannel, PerformanceBudget

        auditlog.register(SLO)
        auditlog.register(PerformanceBudget)
        # Acknowledgements are people's actions on an event.
        auditlog.register(AlertEvent, include_fields=["acknowledged_by", "acknowledged_at"])
        auditlog.register(NotificationChannel, exclude_fields=["secret"])
        auditlog.register(
            AlertRule,
            exclude_fields=["state", "state_since", "last_true_at", "last_value", "last_evaluated_at", "episode"],
        )
