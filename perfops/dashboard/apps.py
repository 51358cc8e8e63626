from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The Performance dashboard: pages, htmx panels, plotly figures built on the server, exports."""

    name = "perfops.dashboard"
    label = "dashboard"
    verbose_name = "Dashboard"
