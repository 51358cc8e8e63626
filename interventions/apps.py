from django.apps import AppConfig


class InterventionsConfig(AppConfig):
    """Profiling, regression flags and incidents, agent configuration, load tests, reports."""

    name = "interventions"
    verbose_name = "Interventions"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from interventions.models import (
            AgentConfig,
            Incident,
            LoadTest,
            ProfilingSession,
            Recommendation,
            RegressionFlag,
            Report,
        )
        from perfops.access.audit import audit_detachments

        auditlog.register(AgentConfig)
        auditlog.register(RegressionFlag, exclude_fields=["evidence"])
        auditlog.register(Incident)
        auditlog.register(Recommendation)
        # Progress and results are measurements; scheduling, cancelling and stopping are the audited acts.
        # A4.8: who generated which report, with its scope (the content itself is not audit data).
        auditlog.register(Report, include_fields=["format", "filters", "title", "created_by"])
        auditlog.register(LoadTest, exclude_fields=["sent", "completed", "failures", "results"])
        # The report is data the system derives; who started, stopped and when is the audited part.
        auditlog.register(ProfilingSession, exclude_fields=["report", "report_status"])
        # Deleting a person leaves what they started and decided without a name; a deleted version, its revert.
        audit_detachments(AgentConfig, RegressionFlag, Incident, Recommendation, Report, LoadTest, ProfilingSession)
