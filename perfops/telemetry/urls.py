from django.urls import path

from perfops.telemetry import api

urlpatterns = [
    path("traces", api.TraceBatchView.as_view(), name="api-traces"),
    path("traces/<str:trace_id>", api.TraceDetailView.as_view(), name="api-trace-detail"),
    path("agents", api.AgentListView.as_view(), name="api-agents"),
    path("agents/<str:slug>", api.AgentDetailView.as_view(), name="api-agent-detail"),
    path("deployments", api.DeploymentListView.as_view(), name="api-deployments"),
]
