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
    path("regression-flags", api.RegressionFlagListView.as_view(), name="api-regression-flags"),
    path("regression-flags/<int:pk>", api.RegressionFlagDetailView.as_view(), name="api-regression-flag"),
    path(
        "regression-flags/<int:pk>/confirm",
        api.RegressionDecisionView.as_view(decision="confirm"),
        name="api-regression-flag-confirm",
    ),
    path(
        "regression-flags/<int:pk>/dismiss",
        api.RegressionDecisionView.as_view(decision="dismiss"),
        name="api-regression-flag-dismiss",
    ),
    path("incidents", api.IncidentListView.as_view(), name="api-incidents"),
    path("incidents/<int:pk>/resolve", api.IncidentResolveView.as_view(), name="api-incident-resolve"),
    path("recommendations", api.RecommendationListView.as_view(), name="api-recommendations"),
    path(
        "recommendations/<int:pk>/apply",
        api.RecommendationDecisionView.as_view(decision="apply"),
        name="api-recommendation-apply",
    ),
    path(
        "recommendations/<int:pk>/dismiss",
        api.RecommendationDecisionView.as_view(decision="dismiss"),
        name="api-recommendation-dismiss",
    ),
    path("load-tests", api.LoadTestListView.as_view(), name="api-load-tests"),
    path("load-tests/<int:pk>", api.LoadTestDetailView.as_view(), name="api-load-test"),
    path("load-tests/<int:pk>/cancel", api.LoadTestActionView.as_view(action="cancel"), name="api-load-test-cancel"),
    path("load-tests/<int:pk>/stop", api.LoadTestActionView.as_view(action="stop"), name="api-load-test-stop"),
    path("agents/<str:slug>/environments", api.EnvironmentComparisonView.as_view(), name="api-agent-environments"),
    path("reports", api.ReportListView.as_view(), name="api-reports"),
    path("reports/<int:pk>", api.ReportDetailView.as_view(), name="api-report"),
    path("reports/<int:pk>/download", api.ReportDownloadView.as_view(), name="api-report-download"),
]
