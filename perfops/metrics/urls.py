from django.urls import path

from perfops.metrics import api

urlpatterns = [
    path("summary", api.MetricsSummaryView.as_view(), name="api-metrics-summary"),
    path("series", api.MetricsSeriesView.as_view(), name="api-metrics-series"),
    path("breakdown", api.MetricsBreakdownView.as_view(), name="api-metrics-breakdown"),
]
