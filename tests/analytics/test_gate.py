"""The deploy gate on real traces: a clear regression fails, an unchanged version passes, too few requests say so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions(agent, engineer):
    """pay-bot: 1.0.0 then 2.0.0 (50% slower), 2.1.0 (the same as 1.0.0) and 3.0.0 (only 50 requests)."""
    rng = np.random.default_rng(5)
    now = datetime.now(UTC).replace(microsecond=0)
    records = []

    def add(version: str, n: int, scale: float, hours_ago: float) -> None:
        for i, latency in enumerate(rng.lognormal(np.log(800 * scale), 0.5, n)):
            at = now - timedelta(hours=hours_ago, seconds=i * 20)
            record = factories.record(
                agent="pay-bot", version=version, latency_ms=round(float(latency), 2), started_at=factories.iso(at)
            )
            records.append(record | {"phases": {}, "dependencies": []})

    add("1.0.0", 600, 1.0, 30)
    add("2.0.0", 400, 1.5, 20)
    add("2.1.0", 400, 1.0, 10)
    add("3.0.0", 50, 1.0, 1)
    client = factories.api_as(engineer, ["ingest"])
    for start in range(0, len(records), 500):
        response = client.post("/api/v1/traces", {"traces": records[start : start + 500]}, format="json")
        assert response.json()["accepted"] == len(records[start : start + 500]), response.json()["rejected"][:1]
    return now


def gate(engineer, **params):
    return factories.api_as(engineer, ["read"]).get("/api/v1/gates/version", params)


def test_a_clear_regression_fails_with_its_numbers(versions, engineer):
    body = gate(engineer, agent="pay-bot", candidate="2.0.0", baseline="1.0.0").json()
    assert body["verdict"] == "fail"
    assert body["latency"]["shift_ratio"] == pytest.approx(1.5, rel=0.12)
    assert body["requests"] == {"baseline": 600, "candidate": 400}
    assert "slower" in body["reasons"][0]


def test_an_unchanged_version_passes_against_the_one_before_it(versions, engineer):
    body = gate(engineer, agent="pay-bot", candidate="2.1.0", baseline="1.0.0").json()
    assert body["verdict"] == "pass"
    assert body["reasons"][0].startswith("No significant slowdown or error increase (600 vs 400 requests")


def test_too_few_requests_are_not_enough_data(versions, engineer):
    body = gate(engineer, agent="pay-bot", candidate="3.0.0").json()
    assert (body["verdict"], body["baseline"]) == ("insufficient", "2.1.0")
    assert body["reasons"] == ["The candidate has 50 requests; at least 200 are needed."]


def test_bad_or_foreign_parameters_are_refused(versions, engineer, research):
    assert gate(engineer, agent="pay-bot").status_code == 400
    assert gate(engineer, agent="pay-bot", candidate="2.0.0", environment="moon").status_code == 400
    outsider = factories.user("olga", "engineers", [research])
    assert (
        factories.api_as(outsider, ["read"])
        .get("/api/v1/gates/version", {"agent": "pay-bot", "candidate": "2.0.0"})
        .status_code
        == 404
    )
