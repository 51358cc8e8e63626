"""URL map: the dashboard, admin, REST API (with OpenAPI), OTLP/HTTP ingest, health."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views.defaults import page_not_found
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from perfops import health
from perfops.analytics.api import VersionGateView

admin.site.site_header = "perfops"
admin.site.site_title = "perfops"
admin.site.index_title = "Performance control room"
admin.site.site_url = "/dashboard/performance/"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="dashboard:performance", permanent=False)),
    path("dashboard/performance/", include("perfops.dashboard.urls")),
    path("", include("slos.urls")),
    path("interventions/", include("interventions.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/metrics/", include("perfops.metrics.urls")),
    path("api/v1/", include("perfops.telemetry.urls")),
    path("api/v1/", include("slos.api_urls")),
    path("api/v1/", include("interventions.api_urls")),
    path("api/v1/gates/version", VersionGateView.as_view(), name="api-gate-version"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("v1/", include("perfops.telemetry.otlp_urls")),
    path("healthz", health.healthz, name="healthz"),
]


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """API clients get a JSON 404 for a path no route matches (`/api/v1/slos/abc`), people Django's page."""
    if request.path.startswith(("/api/", "/v1/")):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


handler404 = not_found
