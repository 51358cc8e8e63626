from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    """The statistics that explain themselves: detectors, forecasts, root causes and recommendations."""

    name = "perfops.analytics"
    label = "analytics"
    verbose_name = "Analytics"
