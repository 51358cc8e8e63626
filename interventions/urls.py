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
]
