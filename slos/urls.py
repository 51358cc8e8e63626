from django.urls import path

from slos import views

app_name = "slos"

urlpatterns = [
    path("", views.feed, name="feed"),
    path("events/<int:pk>/acknowledge", views.acknowledge, name="acknowledge"),
    path("rules/<int:pk>/silence", views.silence, name="silence"),
]
