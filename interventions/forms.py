"""Forms of the interventions, shared by the admin and the pages; choices limited to the person's agents."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from interventions import configs
from interventions.models import AgentConfig, LoadTest, ProfilingSession
from perfops.telemetry.models import Agent


class AgentChoiceForm(forms.ModelForm):
    """The agent field offers only the person's agents."""

    user: Any = None

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if user is not None:
            self.user = user
        if self.user is not None and "agent" in self.fields:
            self.fields["agent"].queryset = Agent.objects.visible_to(self.user)  # type: ignore[attr-defined]


class AgentConfigForm(AgentChoiceForm):
    """A new version: the settings as they should be (prefilled with the current ones)."""

    class Meta:
        model = AgentConfig
        fields = ["agent", "environment", *AgentConfig.SETTINGS, "note"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        agent, environment = data.get("agent"), data.get("environment")
        if agent is not None and environment:
            base = configs.current(agent, environment)
            wanted = {name: data.get(name) for name in AgentConfig.SETTINGS}
            if base is not None and base.settings_dict() == wanted:
                raise ValidationError("These are the current settings: change at least one.")
        return data

    def _post_clean(self) -> None:
        # The version is assigned when the change is applied (under a lock), not by the form.
        self.instance.version = 0
        super()._post_clean()  # type: ignore[misc]


class ProfilingForm(AgentChoiceForm):
    class Meta:
        model = ProfilingSession
        fields = ["agent", "environment", "duration_s", "reason"]
        labels = {"duration_s": "Duration (seconds, at most 3600)"}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        agent, environment = data.get("agent"), data.get("environment")
        if (
            agent is not None
            and environment
            and ProfilingSession.objects.active().filter(agent=agent, environment=environment).exists()
        ):
            raise ValidationError(f"{agent.slug} is already being profiled in {environment}.")
        return data

    def _post_clean(self) -> None:
        from django.utils import timezone

        # Start and expiry are set when it starts; give the model what it needs to validate.
        now = timezone.now()
        self.instance.started_at = now
        self.instance.expires_at = now
        super()._post_clean()  # type: ignore[misc]


class LoadTestForm(AgentChoiceForm):
    """Schedule a load test; production needs an extra, explicit acknowledgement."""

    target_url = forms.URLField(max_length=500, assume_scheme="https", help_text="Its host must be on the allowlist.")
    start_in_minutes = forms.IntegerField(min_value=0, max_value=7 * 24 * 60, initial=0, label="Start in (minutes)")
    confirm_production = forms.BooleanField(
        required=False, label="I understand this sends load to a production endpoint"
    )

    class Meta:
        model = LoadTest
        fields = ["agent", "environment", "target_url", "rate_rps", "ramp_s", "duration_s", "concurrency", "timeout_s"]
        fields += ["request_template"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("environment") == "production" and not data.get("confirm_production"):
            raise ValidationError({"confirm_production": "A production target needs this explicit acknowledgement."})
        return data

    def _post_clean(self) -> None:
        from datetime import timedelta

        from django.utils import timezone

        minutes = self.cleaned_data.get("start_in_minutes") or 0
        self.instance.scheduled_at = timezone.now() + timedelta(minutes=minutes)
        super()._post_clean()  # type: ignore[misc]
