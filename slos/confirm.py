"""What a person confirms before an SLO, alert rule or budget is saved: the change and its effect today.

`describe` works on unsaved objects, so the admin, the pages and the API's preview endpoint all
show the same facts: for an SLO its target, error budget and whether its burn-rate rules would
fire on today's data; for a rule its current value and whether it would fire; for a budget how
much of it is used now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from slos import alerts, budgets, compliance
from slos.models import SLO, AlertRule, PerformanceBudget, format_value, percent, span, until


@dataclass
class Preview:
    """Facts to confirm (label, value) and the rules with their verdict on today's data."""

    title: str
    rules_caption: str = "Its alert rules on today's data"
    facts: list[tuple[str, str]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "facts": [{"label": label, "value": value} for label, value in self.facts],
            "rules": self.rules,
            "warnings": self.warnings,
        }


def describe_slo(slo: SLO, user: Any, now: datetime, *, saved: bool = False) -> Preview:
    report = compliance.report(slo, user, now)
    spent = report.budget
    preview = Preview(f"SLO {slo.name}")
    preview.facts = [
        ("Objective", slo.objective),
        ("Scope", slo.scope_label),
        ("Target", f"{slo.target * 100:g}% good ({(1 - slo.target) * 100:.3g}% of requests may fail the SLI)"),
        ("Requests in the window", f"{spent.total:,}"),
        ("Compliance now", percent(spent.compliance, 5)),
        ("Error budget", f"{spent.allowed_bad:,.0f} bad requests allowed, {spent.bad:,} spent"),
        ("Budget remaining", percent(spent.remaining, 4)),
        ("Burn rate (last hour)", f"{report.current_burn:.3g}x"),
        ("Budget exhausted", until(report.exhaustion)),
    ]
    preview.rules = [
        {
            "severity": rule.severity,
            "condition": f"burn rate at or above {rule.threshold:g}x over {span(int(rule.long_window.total_seconds()))}"
            f" and {span(int(rule.short_window.total_seconds()))}",
            "value": f"{rule.long_burn:.3g}x / {rule.short_burn:.3g}x",
            "fires": rule.fires,
        }
        for rule in report.rules
    ]
    if report.firing and saved:
        preview.warnings.append(f"{len(report.firing)} of its burn-rate conditions hold on today's data.")
    elif report.firing:
        preview.warnings.append(
            f"{len(report.firing)} of its alert rules would fire on today's data: notifications may go out "
            "as soon as it is saved."
        )
    if not spent.total:
        preview.warnings.append("No requests match this scope in the window yet; compliance starts with traffic.")
    return preview


def describe_rule(rule: AlertRule, user: Any, now: datetime, *, saved: bool = False) -> Preview:
    rule.take_scope()
    value = alerts.value_of(rule, user, now)
    fires = rule.holds(value)
    preview = Preview(f"Alert rule {rule.name}", rules_caption="On today's data")
    preview.facts = [
        ("Condition", rule.condition),
        ("Scope", rule.scope_label + (f", filters {rule.filters}" if rule.filters else "")),
        ("Severity", rule.get_severity_display()),
        ("Pending / keep firing", f"{rule.pending_s} s / {rule.keep_firing_s} s"),
    ]
    if rule.recovery_threshold is not None:
        preview.facts.append(("Resolves past", format_value(rule.metric, rule.recovery_threshold)))
    preview.rules = [
        {
            "severity": rule.severity,
            "condition": rule.condition,
            "value": format_value(rule.metric, value),
            "fires": fires,
        }
    ]
    if fires and saved:
        preview.warnings.append("Its condition holds on today's data.")
    elif fires:
        preview.warnings.append("This rule would fire on today's data: notifications may go out within a minute.")
    return preview


def describe_budget(budget: PerformanceBudget, user: Any, now: datetime) -> Preview:
    status = budgets.status(budget, user, now)
    preview = Preview(f"Performance budget {budget.name}")
    used = "no requests yet" if status.consumed is None else f"{status.consumed * 100:.1f}% ({status.value_ms:,.0f} ms)"
    preview.facts = [
        ("Budget", budget.objective),
        ("Scope", budget.scope_label),
        ("Used now", used),
        ("Close to it at", f"{budget.warn_at * 100:g}% ({budget.threshold_ms * budget.warn_at:,.0f} ms)"),
        ("Agents over the limit", ", ".join(use.agent for use in status.over[:10]) or "none"),
    ]
    preview.rules = [
        {
            "severity": severity,
            "condition": f"budget consumed at or above {line * 100:g}%",
            "value": percent(status.consumed, 3),
            "fires": status.consumed is not None and status.consumed >= line,
        }
        for severity, line in (("warning", budget.warn_at), ("ticket", 1.0))
    ]
    if status.state in ("close", "breached"):
        preview.warnings.append(f"The budget is {status.state} on today's data: its alert would fire.")
    return preview


def describe(obj: SLO | AlertRule | PerformanceBudget, user: Any, now: datetime) -> Preview:
    if isinstance(obj, SLO):
        return describe_slo(obj, user, now)
    if isinstance(obj, AlertRule):
        return describe_rule(obj, user, now)
    return describe_budget(obj, user, now)
