from rest_framework.routers import SimpleRouter

from slos import api

router = SimpleRouter(trailing_slash=False)
router.register("slos", api.SLOViewSet, basename="api-slo")
router.register("alert-rules", api.AlertRuleViewSet, basename="api-alert-rule")
router.register("notification-channels", api.NotificationChannelViewSet, basename="api-notification-channel")
router.register("budgets", api.PerformanceBudgetViewSet, basename="api-budget")
router.register("alert-events", api.AlertEventViewSet, basename="api-alert-event")

urlpatterns = router.urls
