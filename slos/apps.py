from django.apps import AppConfig


class SlosConfig(AppConfig):
    """SLOs, error budgets and burn rates, alert rules and channels, performance budgets."""

    name = "slos"
    verbose_name = "SLOs and alerts"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from perfops.access.audit import audit_detachments, audit_secret_changes
        from slos import signals  # noqa: F401  (an SLO brings its alert rules)
        from slos.models import SLO, AlertEvent, AlertRule, NotificationChannel, PerformanceBudget

        # updated_at is bookkeeping (the entry has its own time), as an agent's is.
        auditlog.register(SLO, exclude_fields=["updated_at"])
        auditlog.register(PerformanceBudget, exclude_fields=["updated_at"])
        # The system records an event (which rule, what, which episode); acknowledging it is a person's act.
        auditlog.register(AlertEvent, include_fields=["rule", "kind", "episode", "acknowledged_by", "acknowledged_at"])
        # The signing secret never appears; that it changed does ("(hidden)").
        auditlog.register(NotificationChannel, exclude_fields=["secret"])
        audit_secret_changes(NotificationChannel, "secret")
        # Its state is a measurement; what it watches and whom it tells (its channels) are people's decisions.
        auditlog.register(
            AlertRule,
            exclude_fields=["state", "state_since", "last_true_at", "last_value", "last_evaluated_at", "episode"],
            m2m_fields={"channels"},
        )
        # Deleting a channel takes it out of its rules; deleting a person leaves what they made without a maker.
        audit_detachments(SLO, PerformanceBudget, AlertEvent, AlertRule)
