"""What the background passes compute for pages to read: agents' baselines and the current error anomalies.

A page never runs a fleet-wide detector while someone waits: beat refreshes these rows (baselines
hourly, anomalies every five minutes) and the dashboard reads the rows of its scope.
"""

from __future__ import annotations

from django.db import models

from perfops.telemetry.choices import Environment
from perfops.telemetry.models import Agent


class AgentBaseline(models.Model):
    """An agent's typical successful request in one environment over the day before `computed_at`."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    environment = models.CharField(max_length=16, choices=Environment.choices)
    computed_at = models.DateTimeField()
    requests = models.PositiveIntegerField()
    latency_p50_ms = models.FloatField()
    phase_p50_ms = models.JSONField(default=dict)
    call_p50_ms = models.JSONField(default=dict)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "environment"], name="agentbaseline_once")]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.environment} at {self.computed_at:%Y-%m-%d %H:%M}"


class ErrorAnomaly(models.Model):
    """An agent's error type whose rate in the last hours is anomalous against its own history (chart 4.12)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    environment = models.CharField(max_length=16, choices=Environment.choices)
    error_type = models.CharField(max_length=24)
    at = models.DateTimeField(help_text="Start of the most anomalous recent hour.")
    failures = models.PositiveIntegerField()
    requests = models.PositiveIntegerField()
    rate = models.FloatField()
    expected_rate = models.FloatField()
    score = models.FloatField()
    reason = models.CharField(max_length=400)
    detected_at = models.DateTimeField()

    class Meta:
        ordering = ["-score"]
        indexes = [models.Index(fields=["detected_at"], name="erroranomaly_detected_idx")]

    def __str__(self) -> str:
        return self.reason
