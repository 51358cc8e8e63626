"""OTLP/HTTP: the path an OpenTelemetry exporter posts to (endpoint http://host/ + v1/traces)."""

from django.urls import path

from perfops.telemetry import api_otlp

urlpatterns = [
    path("traces", api_otlp.OtlpTracesView.as_view(), name="otlp-traces"),
]
