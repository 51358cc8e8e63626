from django.apps import AppConfig


class SlosConfig(AppConfig):
    """SLOs, error budgets and burn rates, alert rules and channels, performance budgets."""

    name = "slos"
    verbose_name = "SLOs and alerts"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from slos.models import SLO

        auditlog.register(SLO)
