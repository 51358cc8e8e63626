"""Interventions in the admin: apply a configuration version, revert to one, start and stop profiling.

Each goes through a confirmation page; configuration versions are append-only (no edit, no delete).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse

from interventions import configs, loadtest, profiling, regressions
from interventions.confirm import describe, describe_config
from interventions.forms import AgentConfigForm, LoadTestForm, ProfilingForm
from interventions.models import (
    AgentConfig,
    Incident,
    LoadTest,
    ProfilingSession,
    Recommendation,
    RegressionFlag,
)
from perfops.access.admin_scoping import ConfirmedChangeAdmin, DepartmentScopedAdmin, confirm_action


class InterventionAdmin(ConfirmedChangeAdmin):
    department_path = "agent__department_id"
    autocomplete_fields = ["agent"]

    def describe(self, request: HttpRequest, candidate: Any) -> Any:
        return describe(candidate, request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the history is the record


@admin.register(AgentConfig)
class AgentConfigAdmin(InterventionAdmin):
    form = AgentConfigForm
    list_display = ["agent", "environment", "version", "model", "timeout_ms", "concurrency", "source", "created_by"]
    list_display += ["created_at"]
    list_filter = ["environment", "source", "response_cache", "prompt_cache"]
    search_fields = ["agent__slug", "model", "note"]
    list_select_related = ["agent", "created_by"]
    readonly_fields = ["version", "source", "restores", "created_by", "created_at"]
    actions = ["revert_to"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: AgentConfig, form: Any, change: bool) -> None:
        settings = {name: getattr(obj, name) for name in AgentConfig.SETTINGS}
        made = configs.apply(obj.agent, obj.environment, settings, request.user, note=obj.note)
        obj.pk, obj.version, obj.source, obj.created_at = made.pk, made.version, made.source, made.created_at
        obj._state.adding = False

    @admin.action(description="Revert to the selected version (as a new version)")
    def revert_to(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one version to revert to.", messages.ERROR)
            return None
        target = queryset.select_related("agent").get()
        if not self.has_add_permission(request):
            self.message_user(request, "Your role may not change configurations.", messages.ERROR)
            return None
        if request.POST.get("_confirmed"):
            try:
                made = configs.revert(target, request.user)
            except configs.NoChange:
                self.message_user(request, f"v{target.version} is already the current configuration.", messages.INFO)
                return None
            self.message_user(request, f"{made} now restores v{target.version}.", messages.SUCCESS)
            return None
        candidate = AgentConfig(agent=target.agent, environment=target.environment, **target.settings_dict())
        candidate.note = f"revert to v{target.version}"
        title = f"Confirm: revert {target.agent.slug} to v{target.version}"
        return confirm_action(self, request, title, describe_config(candidate, request.user), "revert_to", [target.pk])


@admin.register(ProfilingSession)
class ProfilingSessionAdmin(InterventionAdmin):
    form = ProfilingForm
    list_display = ["agent", "environment", "status", "started_at", "expires_at", "ended_at", "end_reason"]
    list_display += ["started_by", "report_status"]
    list_filter = ["status", "environment", "end_reason", "report_status"]
    search_fields = ["agent__slug", "reason"]
    list_select_related = ["agent", "started_by", "ended_by"]
    readonly_fields = ["status", "started_by", "started_at", "expires_at", "ended_at", "ended_by", "end_reason"]
    readonly_fields += ["report_status"]
    actions = ["stop_now"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: ProfilingSession, form: Any, change: bool) -> None:
        made = profiling.start(obj.agent, obj.environment, obj.duration_s, request.user, obj.reason)
        obj.pk, obj.started_at, obj.expires_at = made.pk, made.started_at, made.expires_at
        obj._state.adding = False

    @admin.action(description="Stop the selected sessions now (their reports follow)")
    def stop_now(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        if not self.has_add_permission(request):
            self.message_user(request, "Your role may not stop profiling.", messages.ERROR)
            return None
        active = list(queryset.filter(status=ProfilingSession.Status.ACTIVE).select_related("agent"))
        if request.POST.get("_confirmed"):
            stopped = sum(profiling.end(session, user=request.user) for session in active)
            self.message_user(request, f"Stopped {stopped} profiling session(s).", messages.SUCCESS)
            return None
        from slos.confirm import Preview

        preview = Preview(f"Stop {len(active)} profiling session(s)")
        preview.facts = [
            (str(session.agent.slug), f"{session.environment}, until {session.expires_at:%H:%M} UTC")
            for session in active
        ]
        if not active:
            preview.warnings.append("None of the selected sessions is active.")
        return confirm_action(
            self, request, "Confirm: stop profiling", preview, "stop_now", [session.pk for session in active]
        )


@admin.register(RegressionFlag)
class RegressionFlagAdmin(DepartmentScopedAdmin):
    """Flags with their evidence; confirm (opens an incident, notifies) or dismiss with a reason, confirmed first."""

    department_path = "agent__department_id"
    list_display = ["agent", "environment", "version", "baseline_version", "status", "source", "summary", "flagged_at"]
    list_filter = ["status", "source", "environment"]
    search_fields = ["agent__slug", "version", "summary"]
    list_select_related = ["agent"]
    readonly_fields = [
        "agent",
        "environment",
        "version",
        "baseline_version",
        "status",
        "source",
        "summary",
        "evidence",
        "flagged_by",
        "flagged_at",
        "decided_by",
        "decided_at",
        "dismiss_reason",
    ]
    actions = ["confirm_flags", "dismiss_flags"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # flagged from the version chart, the agent's page or the API, with evidence computed

    @admin.action(description="Dismiss the selected regressions as false positives (with a reason)")
    def dismiss_flags(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        if not request.user.has_perm("interventions.change_regressionflag"):
            self.message_user(request, "Your role may not decide regressions.", messages.ERROR)
            return None
        pending = list(queryset.filter(status=RegressionFlag.Status.SUSPECTED).select_related("agent"))
        reason = request.POST.get("reason", "").strip()
        if request.POST.get("_confirmed") and reason:
            done = 0
            for flagged in pending:
                try:
                    regressions.dismiss(flagged, request.user, reason)
                    done += 1
                except regressions.NotPending:
                    continue
            self.message_user(request, f"Dismissed {done} regression flag(s).", messages.SUCCESS)
            return None
        from slos.confirm import Preview

        preview = Preview(f"Dismiss {len(pending)} regression flag(s)")
        preview.facts = [(f"{f.agent.slug} {f.version} ({f.environment})", f.summary) for f in pending]
        if request.POST.get("_confirmed"):
            preview.warnings.append("Say why they are false positives.")
        return confirm_action(
            self,
            request,
            "Confirm: dismiss regressions",
            preview,
            "dismiss_flags",
            [f.pk for f in pending],
            ask_reason=True,
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Confirm the selected regressions (opens incidents, notifies the channels)")
    def confirm_flags(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        if not request.user.has_perm("interventions.change_regressionflag"):
            self.message_user(request, "Your role may not decide regressions.", messages.ERROR)
            return None
        pending = list(queryset.filter(status=RegressionFlag.Status.SUSPECTED).select_related("agent"))
        if request.POST.get("_confirmed"):
            opened = 0
            for flagged in pending:
                try:
                    regressions.confirm(flagged, request.user)
                    opened += 1
                except regressions.NotPending:
                    continue
            self.message_user(request, f"Confirmed {opened} regression(s); incidents opened.", messages.SUCCESS)
            return None
        from slos.confirm import Preview

        preview = Preview(f"Confirm {len(pending)} regression(s)")
        preview.facts = [(f"{f.agent.slug} {f.version} ({f.environment})", f.summary) for f in pending]
        if not pending:
            preview.warnings.append("None of the selected flags is still suspected.")
        return confirm_action(self, request, "Confirm: regressions", preview, "confirm_flags", [f.pk for f in pending])


@admin.register(Incident)
class IncidentAdmin(DepartmentScopedAdmin):
    department_path = "flag__agent__department_id"
    list_display = ["title", "status", "opened_by", "opened_at", "resolved_by", "resolved_at"]
    list_filter = ["status"]
    search_fields = ["title", "flag__agent__slug", "flag__version"]
    list_select_related = ["flag", "opened_by", "resolved_by"]
    readonly_fields = ["flag", "title", "status", "opened_by", "opened_at", "resolved_by", "resolved_at"]
    fields = ["flag", "title", "status", "opened_by", "opened_at", "resolved_by", "resolved_at", "notes"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # an incident is opened by confirming a regression

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Recommendation)
class RecommendationAdmin(DepartmentScopedAdmin):
    """Read-only here: apply or dismiss from the agent's page or the API (both confirm and audit)."""

    department_path = "agent__department_id"
    list_display = ["agent", "environment", "title", "status", "expected_effect", "created_at", "decided_by"]
    list_filter = ["status", "environment"]
    search_fields = ["agent__slug", "title"]
    list_select_related = ["agent", "decided_by"]
    readonly_fields = [f.name for f in Recommendation._meta.fields]
    actions = ["apply_selected", "dismiss_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _decide(self, request: HttpRequest, queryset: Any, action: str) -> HttpResponse | None:
        if not request.user.has_perm("interventions.add_agentconfig"):
            self.message_user(request, "Your role may not change configurations.", messages.ERROR)
            return None
        open_ones = list(queryset.filter(status=Recommendation.Status.OPEN).select_related("agent"))
        if request.POST.get("_confirmed"):
            done = 0
            for item in open_ones:
                try:
                    if action == "apply_selected":
                        configs.apply_recommendation(item, request.user)
                        done += 1
                    else:
                        done += configs.dismiss_recommendation(item, request.user)
                except configs.NoChange:
                    continue
            verb = "Applied" if action == "apply_selected" else "Dismissed"
            self.message_user(request, f"{verb} {done} recommendation(s).", messages.SUCCESS)
            return None
        from slos.confirm import Preview

        verb = "Apply" if action == "apply_selected" else "Dismiss"
        preview = Preview(f"{verb} {len(open_ones)} recommendation(s)")
        preview.facts = [
            (f"{item.agent.slug} ({item.environment})", f"{item.title}: {item.changes}") for item in open_ones
        ]
        if action == "apply_selected":
            preview.warnings.append("Each becomes a new configuration version; revert it from the agent's history.")
        return confirm_action(
            self, request, f"Confirm: {verb.lower()} recommendations", preview, action, [item.pk for item in open_ones]
        )

    @admin.action(description="Apply the selected recommendations (new configuration versions)")
    def apply_selected(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        return self._decide(request, queryset, "apply_selected")

    @admin.action(description="Dismiss the selected recommendations")
    def dismiss_selected(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        return self._decide(request, queryset, "dismiss_selected")


@admin.register(LoadTest)
class LoadTestAdmin(InterventionAdmin):
    """Schedule a load test (confirmed; production needs its acknowledgement), cancel or stop it."""

    form = LoadTestForm
    list_display = ["agent", "environment", "scheduled_at", "rate_rps", "duration_s", "status", "sent", "failures"]
    list_display += ["created_by"]
    list_filter = ["status", "environment"]
    search_fields = ["agent__slug", "target_url"]
    list_select_related = ["agent", "created_by"]
    readonly_fields = ["status", "created_by", "started_at", "finished_at", "sent", "completed", "failures"]
    readonly_fields += ["results", "detail"]
    actions = ["cancel_tests", "stop_tests"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: LoadTest, form: Any, change: bool) -> None:
        loadtest.schedule(obj, request.user)

    def _act(self, request: HttpRequest, queryset: Any, action: str) -> HttpResponse | None:
        if not request.user.has_perm("interventions.change_loadtest"):
            self.message_user(request, "Your role may not cancel or stop load tests.", messages.ERROR)
            return None
        wanted = LoadTest.Status.SCHEDULED if action == "cancel_tests" else LoadTest.Status.RUNNING
        chosen = list(queryset.filter(status=wanted).select_related("agent"))
        if request.POST.get("_confirmed"):
            act = loadtest.cancel if action == "cancel_tests" else loadtest.stop
            done = sum(act(test, request.user) for test in chosen)
            self.message_user(
                request, f"{done} load test(s) {'cancelled' if action == 'cancel_tests' else 'stopping'}."
            )
            return None
        from slos.confirm import Preview

        preview = Preview(f"{'Cancel' if action == 'cancel_tests' else 'Stop'} {len(chosen)} load test(s)")
        preview.facts = [
            (test.agent.slug, f"{test.environment}, {test.scheduled_at:%Y-%m-%d %H:%M} UTC") for test in chosen
        ]
        if not chosen:
            preview.warnings.append(f"None of the selected tests is {wanted}.")
        return confirm_action(self, request, "Confirm: load tests", preview, action, [test.pk for test in chosen])

    @admin.action(description="Cancel the selected scheduled tests (they send nothing)")
    def cancel_tests(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        return self._act(request, queryset, "cancel_tests")

    @admin.action(description="Stop the selected running tests")
    def stop_tests(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        return self._act(request, queryset, "stop_tests")
