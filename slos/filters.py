"""FilterSets of the alert rule and alert event lists.

A filter naming an SLO, a budget or a rule looks it up among the caller's, so another department's id
is refused exactly like an id that does not exist (a plain `filterset_fields` entry would look it up
among all rows and answer differently for the two, telling which ids exist elsewhere).
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db import models

from perfops.strictness import StrictBooleanFilter
from slos.models import SLO, AlertEvent, AlertRule, PerformanceBudget


def _visible(model: type[models.Model]) -> Any:
    """The rows of `model` the request's person may see (none while the OpenAPI schema is built)."""

    def queryset(request: Any) -> Any:
        manager: Any = model._default_manager
        return manager.none() if request is None else manager.visible_to(request.user)

    return queryset


class AlertRuleFilter(django_filters.FilterSet):
    """The alert rule list's filters; ?slo= and ?budget= only among the caller's."""

    slo = django_filters.ModelChoiceFilter(queryset=_visible(SLO))
    budget = django_filters.ModelChoiceFilter(queryset=_visible(PerformanceBudget))
    enabled = StrictBooleanFilter()

    class Meta:
        model = AlertRule
        fields = ["metric", "severity", "state", "enabled", "environment", "slo", "budget"]


class AlertEventFilter(django_filters.FilterSet):
    """The alert event list's filters; ?rule= only among the caller's."""

    rule = django_filters.ModelChoiceFilter(queryset=_visible(AlertRule))

    class Meta:
        model = AlertEvent
        fields = ["kind", "rule"]
