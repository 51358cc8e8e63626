"""FilterSets for the telemetry lists, shared by the API and the pages."""

import django_filters

from perfops.strictness import StrictBooleanFilter, UtcIsoDateTimeFilter
from perfops.telemetry.choices import Environment
from perfops.telemetry.models import Agent, Deployment


class AgentFilter(django_filters.FilterSet):
    department = django_filters.CharFilter(field_name="department__slug", help_text="Department slug.")
    team = django_filters.CharFilter(field_name="team__slug", help_text="Team slug.")
    intent_category = django_filters.CharFilter()
    search = django_filters.CharFilter(method="filter_search", help_text="Part of the slug or name.")
    auto_registered = StrictBooleanFilter(help_text="Created by ingest (true) or by a person (false).")

    class Meta:
        model = Agent
        fields = ["department", "team", "intent_category", "auto_registered"]

    def filter_search(self, queryset, name, value):  # type: ignore[no-untyped-def]
        return queryset.filter(slug__icontains=value) | queryset.filter(name__icontains=value)


class DeploymentFilter(django_filters.FilterSet):
    agent = django_filters.CharFilter(field_name="agent__slug", help_text="Agent slug.")
    environment = django_filters.ChoiceFilter(choices=Environment.choices)
    version = django_filters.CharFilter()
    since = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Deployment
        fields = ["agent", "environment", "version", "source"]
