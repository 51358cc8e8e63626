from django.apps import AppConfig


class InterventionsConfig(AppConfig):
    """Profiling, regression flags and incidents, agent configuration, load tests, reports."""

    name = "interventions"
    verbose_name = "Interventions"
