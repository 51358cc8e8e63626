"""Recommendations: shown with before and after, applied as a new version after a confirmation, or dismissed."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from interventions import configs
from interventions.models import AgentConfig, Recommendation
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def recommendation(agent, engineer) -> Recommendation:
    configs.apply(agent, "production", {"timeout_ms": 30000}, engineer)
    return Recommendation.objects.create(
        agent=agent,
        environment="production",
        title="Enable prompt caching",
        rationale="The LLM phase is 82% of latency and cache hits are 3%.",
        expected_effect="p95 about -25%",
        changes={"prompt_cache": True, "cache_ttl_s": 900},
    )


def test_applying_from_the_page_shows_before_and_after_then_adds_a_version(recommendation, engineer):
    client = Client()
    client.force_login(engineer)
    page = client.get(reverse("interventions:agent", args=["pay-bot"])).content.decode()
    assert "<code>prompt_cache</code> off → <strong>on</strong>" in page
    url = reverse("interventions:recommendation-apply", args=[recommendation.pk])
    preview = client.post(url).content.decode()
    assert "off → on" in preview
    assert "3600 → 900" in preview
    assert "The LLM phase is 82% of latency" in preview
    assert AgentConfig.objects.count() == 1
    client.post(url, {"_confirmed": "1"})
    recommendation.refresh_from_db()
    current = configs.current(recommendation.agent, "production")
    assert current is not None
    assert (current.version, current.source, current.prompt_cache, current.timeout_ms) == (
        2,
        "recommendation",
        True,
        30000,
    )
    assert (recommendation.status, recommendation.applied_config) == ("applied", current)
    assert LogEntry.objects.get_for_object(recommendation).filter(actor=engineer).count() == 1
    # Reverting the applied recommendation is the configuration history's revert.
    first = AgentConfig.objects.get(version=1)
    assert configs.revert(first, engineer).settings_dict() == first.settings_dict()


def test_a_decided_recommendation_cannot_be_applied_twice_over_the_api(recommendation, engineer, viewer):
    client = factories.api_as(engineer, ["automation", "read"])
    assert (
        factories.api_as(viewer, ["automation"]).post(f"/api/v1/recommendations/{recommendation.pk}/apply").status_code
        == 403
    )
    assert client.post(f"/api/v1/recommendations/{recommendation.pk}/apply").json()["status"] == "applied"
    assert client.post(f"/api/v1/recommendations/{recommendation.pk}/apply").status_code == 409
    assert client.post(f"/api/v1/recommendations/{recommendation.pk}/dismiss").status_code == 409
    assert AgentConfig.objects.count() == 2


def test_a_recommendation_names_only_real_settings(agent):
    bad = Recommendation(agent=agent, environment="production", title="x", rationale="y", changes={"gpu": 2})
    with pytest.raises(ValidationError, match="Unknown setting"):
        bad.full_clean()
