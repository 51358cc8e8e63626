from django.urls import path

from perfops.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.performance, name="performance"),
    path("agents/<slug:slug>", views.agent, name="agent"),
    path("requests/<str:trace_id>", views.request_detail, name="request"),
    path("panels/<slug:name>", views.panel, name="panel"),
    path("slow-requests.csv", views.slow_requests_csv, name="slow-csv"),
]
