from django.urls import path

from interventions import api

urlpatterns = [
    path("agents/<str:slug>/config", api.AgentConfigView.as_view(), name="api-agent-config"),
    path("agents/<str:slug>/configs", api.AgentConfigHistoryView.as_view(), name="api-agent-configs"),
    path(
        "agents/<str:slug>/configs/<int:version>/revert",
        api.AgentConfigRevertView.as_view(),
        name="api-agent-config-revert",
    ),
    path("profiling", api.ProfilingListView.as_view(), name="api-profiling"),
    path("profiling/<int:pk>", api.ProfilingDetailView.as_view(), name="api-profiling-detail"),
    path("profiling/<int:pk>/stop", api.ProfilingStopView.as_view(), name="api-profiling-stop"),
    path("profiling/<int:pk>/report", api.ProfilingReportView.as_view(), name="api-profiling-report"),
    path(
        "profiling/<int:pk>/report.csv",
        api.ProfilingReportView.as_view(),
        {"as_csv": True},
        name="api-profiling-report-csv",
    ),
]
