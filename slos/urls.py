from django.urls import path

from slos import pages, views

app_name = "slos"

urlpatterns = [
    path("alerts/", views.feed, name="feed"),
    path("alerts/events/<int:pk>/acknowledge", views.acknowledge, name="acknowledge"),
    path("alerts/rules/<int:pk>/silence", views.silence, name="silence"),
    path("alerts/rules/", pages.rule_list, name="rule-list"),
    path("alerts/rules/new", pages.edit, {"kind": "rule"}, name="rule-new"),
    path("alerts/rules/<int:pk>/", pages.rule_detail, name="rule-detail"),
    path("alerts/rules/<int:pk>/edit", pages.edit, {"kind": "rule"}, name="rule-edit"),
    path("alerts/rules/<int:pk>/delete", pages.delete, {"kind": "rule"}, name="rule-delete"),
    path("slos/", pages.slo_list, name="slo-list"),
    path("slos/new", pages.edit, {"kind": "slo"}, name="slo-new"),
    path("slos/openslo.yaml", views.openslo_export, name="openslo-export"),
    path("slos/import", views.openslo_import, name="openslo-import"),
    path("slos/<int:pk>/", pages.slo_detail, name="slo-detail"),
    path("slos/<int:pk>/edit", pages.edit, {"kind": "slo"}, name="slo-edit"),
    path("slos/<int:pk>/delete", pages.delete, {"kind": "slo"}, name="slo-delete"),
    path("budgets/", pages.budget_list, name="budget-list"),
    path("budgets/new", pages.edit, {"kind": "budget"}, name="budget-new"),
    path("budgets/<int:pk>/", pages.budget_detail, name="budget-detail"),
    path("budgets/<int:pk>/edit", pages.edit, {"kind": "budget"}, name="budget-edit"),
    path("budgets/<int:pk>/delete", pages.delete, {"kind": "budget"}, name="budget-delete"),
]
