from django.urls import path

from interventions import views

app_name = "interventions"

urlpatterns = [
    path("agents/<str:slug>/", views.agent_page, name="agent"),
    path("agents/<str:slug>/config", views.change_config, name="change-config"),
    path("agents/<str:slug>/config/<int:version>/revert", views.revert_config, name="revert-config"),
    path("agents/<str:slug>/profiling", views.start_profiling, name="start-profiling"),
    path("profiling/<int:pk>/", views.profiling_report, name="profiling"),
    path("profiling/<int:pk>/stop", views.stop_profiling, name="stop-profiling"),
    path("agents/<str:slug>/flags/new", views.flag_new, name="flag-new"),
    path("flags/<int:pk>/", views.flag_detail, name="flag"),
    path("flags/<int:pk>/confirm", views.flag_decide, {"decision": "confirm"}, name="flag-confirm"),
    path("flags/<int:pk>/dismiss", views.flag_decide, {"decision": "dismiss"}, name="flag-dismiss"),
    path("incidents/<int:pk>/resolve", views.incident_resolve, name="incident-resolve"),
    path(
        "recommendations/<int:pk>/apply",
        views.recommendation_decide,
        {"decision": "apply"},
        name="recommendation-apply",
    ),
    path(
        "recommendations/<int:pk>/dismiss",
        views.recommendation_decide,
        {"decision": "dismiss"},
        name="recommendation-dismiss",
    ),
    path("agents/<str:slug>/load-tests", views.schedule_load_test, name="schedule-load-test"),
    path("load-tests/<int:pk>/", views.load_test_detail, name="load-test"),
    path("load-tests/<int:pk>/cancel", views.load_test_action, {"action": "cancel"}, name="load-test-cancel"),
    path("load-tests/<int:pk>/stop", views.load_test_action, {"action": "stop"}, name="load-test-stop"),
    path("agents/<str:slug>/environments", views.environments_page, name="environments"),
    path("reports/", views.report_list, name="reports"),
    path("reports/new", views.request_report, name="report-new"),
    path("reports/<int:pk>/", views.report_detail, name="report"),
    path("reports/<int:pk>/download", views.report_download, name="report-download"),
]
