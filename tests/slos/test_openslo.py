"""OpenSLO v1 import and export: round trips, updates by name, department scoping and precise errors."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from slos import openslo
from slos.models import SLO, AlertRule
from tests import factories

RFC1123 = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
SOURCE = "spec.indicator.spec.ratioMetric.good.metricSource.spec"
PREFIX = "document 1 (metadata.name 'pay-bot-availability')"


@pytest.fixture
def pay_bot(payments):
    return factories.agent("pay-bot", payments)


@pytest.fixture
def lab_bot(research):
    return factories.agent("lab-bot", research)


def document(**source: Any) -> dict[str, Any]:
    """A valid SLO document: pay-bot's 99.9% availability over 30 days, with `source` overriding the scope."""
    spec = {"sli": "availability", "environment": "production", "scope": "agent", "agent": "pay-bot", **source}
    spec = {key: value for key, value in spec.items() if value is not None}
    total = {key: value for key, value in spec.items() if key != "thresholdMs"}
    return {
        "apiVersion": "openslo/v1",
        "kind": "SLO",
        "metadata": {"name": "pay-bot-availability", "displayName": "pay-bot availability"},
        "spec": {
            "service": "pay-bot",
            "indicator": {
                "metadata": {"name": "pay-bot-availability-sli"},
                "spec": {
                    "ratioMetric": {
                        "counter": True,
                        "good": {"metricSource": {"type": "perfops", "spec": spec}},
                        "total": {"metricSource": {"type": "perfops", "spec": total}},
                    }
                },
            },
            "timeWindow": [{"duration": "30d", "isRolling": True}],
            "budgetingMethod": "Occurrences",
            "objectives": [{"displayName": "99.9% succeed", "target": 0.999}],
        },
    }


def dump(*documents: Any) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)


def edited(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of the document with the value at a dotted path (list indexes as numbers) set, or removed for ..."""
    doc = copy.deepcopy(base or document())
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    key_: Any = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[key_]
    else:
        node[key_] = value
    return doc


def snapshot() -> list[tuple[Any, ...]]:
    """What an SLO is, without its ids and timestamps."""
    return sorted(
        (
            slo.name,
            slo.scope,
            slo.department.slug if slo.department else None,
            slo.team.slug if slo.team else None,
            slo.agent.slug if slo.agent else None,
            slo.environment,
            slo.kind,
            slo.threshold_ms,
            slo.target,
            slo.window_days,
        )
        for slo in SLO.objects.select_related("department", "team", "agent")
    )


def refused(text: str, user: Any) -> list[str]:
    """The errors of an import that must write nothing."""
    before = (SLO.objects.count(), AlertRule.objects.count())
    planned, errors = openslo.parse(text, user)
    assert errors
    assert planned == []
    assert openslo.apply(planned, user).created == []
    assert (SLO.objects.count(), AlertRule.objects.count()) == before
    return errors


@pytest.fixture
def fleet_of_slos(payments, research, pay_bot, lab_bot):
    """One SLO of every scope, with a team slug that exists in two departments."""
    checkout = factories.team(payments, "checkout")
    factories.team(research, "checkout")
    common = {"target": 0.99, "window_days": 30}
    return [
        SLO.objects.create(
            name="pay-bot availability",
            scope="agent",
            agent=pay_bot,
            department=payments,
            kind="availability",
            **common,
        ),
        SLO.objects.create(
            name="checkout latency",
            scope="team",
            team=checkout,
            department=payments,
            environment="staging",
            kind="latency",
            threshold_ms=500,
            target=0.95,
            window_days=7,
        ),
        SLO.objects.create(
            name="payments latency",
            scope="department",
            department=payments,
            kind="latency",
            threshold_ms=1200.5,
            target=0.999,
            window_days=28,
        ),
        SLO.objects.create(
            name="fleet availability",
            scope="fleet",
            environment="development",
            kind="availability",
            target=0.9,
            window_days=30,
        ),
        SLO.objects.create(
            name="lab-bot latency",
            scope="agent",
            agent=lab_bot,
            department=research,
            kind="latency",
            threshold_ms=800,
            target=0.99999,
        ),
    ]


# ---------------------------------------------------------------- export


@pytest.mark.django_db
def test_export_has_the_openslo_v1_shape(fleet_of_slos):
    documents = list(yaml.safe_load_all(openslo.export_slos(SLO.objects.select_related("department", "team", "agent"))))

    assert len(documents) == 5
    for doc in documents:
        assert list(doc) == ["apiVersion", "kind", "metadata", "spec"]
        assert (doc["apiVersion"], doc["kind"]) == ("openslo/v1", "SLO")
        assert RFC1123.fullmatch(doc["metadata"]["name"])
        assert all(isinstance(value, list) for value in doc["metadata"]["labels"].values())
        spec = doc["spec"]
        assert isinstance(spec["service"], str)
        assert len(spec["description"]) <= 1050
        assert RFC1123.fullmatch(spec["indicator"]["metadata"]["name"])
        ratio = spec["indicator"]["spec"]["ratioMetric"]
        assert ratio["counter"] is True
        assert ratio["good"]["metricSource"]["type"] == ratio["total"]["metricSource"]["type"] == "perfops"
        assert len(spec["timeWindow"]) == 1
        assert spec["timeWindow"][0]["isRolling"] is True
        assert re.fullmatch(r"\d+d", spec["timeWindow"][0]["duration"])
        assert spec["budgetingMethod"] == "Occurrences"
        assert 0 < spec["objectives"][0]["target"] < 1


@pytest.mark.django_db
def test_export_writes_the_scope_in_the_metric_source(fleet_of_slos):
    documents = {doc["metadata"]["displayName"]: doc for doc in yaml.safe_load_all(openslo.export_slos(fleet_of_slos))}
    team = documents["checkout latency"]["spec"]
    ratio = team["indicator"]["spec"]["ratioMetric"]

    assert ratio["good"]["metricSource"]["spec"] == {
        "sli": "latency",
        "thresholdMs": 500,
        "environment": "staging",
        "scope": "team",
        "department": "payments",
        "team": "checkout",
    }
    assert "thresholdMs" not in ratio["total"]["metricSource"]["spec"]
    assert team["service"] == "checkout"
    assert team["timeWindow"] == [{"duration": "7d", "isRolling": True}]
    assert team["objectives"] == [{"displayName": "95% under 500 ms", "target": 0.95}]
    assert documents["fleet availability"]["spec"]["service"] == "fleet"
    assert documents["fleet availability"]["metadata"]["labels"] == {"scope": ["fleet"], "environment": ["development"]}


@pytest.mark.django_db
def test_export_names_are_unique_dns_labels(pay_bot):
    long_name = "Pay_Bot " * 16
    slos = [
        SLO.objects.create(name=name, scope="agent", agent=pay_bot, environment=env, kind="availability", target=0.99)
        for name, env in [
            ("pay-bot availability", "production"),
            ("pay-bot availability", "staging"),
            (long_name.strip(), "production"),
            (long_name.strip(), "staging"),
            ("???", "production"),
        ]
    ]
    names = [doc["metadata"]["name"] for doc in yaml.safe_load_all(openslo.export_slos(slos))]

    assert names[:2] == ["pay-bot-availability", "pay-bot-availability-2"]
    assert names[4] == "slo"
    assert len(set(names)) == 5
    for name in names:
        assert RFC1123.fullmatch(name)
        assert RFC1123.fullmatch(f"{name}-sli")


@pytest.mark.django_db
def test_export_of_nothing_is_empty():
    assert openslo.export_slos([]) == ""


# ---------------------------------------------------------------- round trip and updates


@pytest.mark.django_db
def test_round_trip_recreates_equal_slos(fleet_of_slos, superuser):
    text = openslo.export_slos(SLO.objects.select_related("department", "team", "agent"))
    expected = snapshot()
    SLO.objects.all().delete()

    planned, errors = openslo.parse(text, superuser)
    result = openslo.apply(planned, superuser)

    assert errors == []
    assert [item.action for item in planned] == ["create"] * 5
    assert len(result.created) == 5
    assert snapshot() == expected
    assert {slo.created_by for slo in SLO.objects.all()} == {superuser}


@pytest.mark.django_db
def test_round_trip_for_a_department_member(fleet_of_slos, manager):
    text = openslo.export_slos(SLO.objects.visible_to(manager).select_related("department", "team", "agent"))
    expected = [row for row in snapshot() if row[2] == "payments"]
    SLO.objects.filter(department__slug="payments").delete()

    planned, errors = openslo.parse(text, manager)
    openslo.apply(planned, manager)

    assert errors == []
    assert [row for row in snapshot() if row[2] == "payments"] == expected


@pytest.mark.django_db
def test_importing_its_own_export_changes_nothing(fleet_of_slos, superuser):
    before = snapshot()
    planned, errors = openslo.parse(openslo.export_slos(fleet_of_slos), superuser)
    result = openslo.apply(planned, superuser)

    assert errors == []
    assert {item.action for item in planned} == {"unchanged"}
    assert (result.created, result.updated, len(result.unchanged)) == ([], [], 5)
    assert snapshot() == before


@pytest.mark.django_db
def test_a_new_slo_gets_its_creator_and_burn_rate_rules(pay_bot, manager):
    before = (SLO.objects.count(), AlertRule.objects.count())
    planned, errors = openslo.parse(dump(document()), manager)

    assert errors == []
    assert [item.action for item in planned] == ["create"]
    assert (SLO.objects.count(), AlertRule.objects.count()) == before  # parse writes nothing
    [slo] = openslo.apply(planned, manager).created
    slo.refresh_from_db()
    assert (slo.name, slo.agent, slo.department, slo.created_by) == (
        "pay-bot availability",
        pay_bot,
        pay_bot.department,
        manager,
    )
    assert slo.alert_rules.count() == 4


@pytest.mark.django_db
def test_an_update_by_name_changes_the_target(slo, manager):
    text = openslo.export_slos([slo]).replace("target: 0.999", "target: 0.995")

    planned, errors = openslo.parse(text, manager)

    assert errors == []
    assert [(item.action, item.changes) for item in planned] == [("update", ["target: 0.999 → 0.995"])]
    slo.refresh_from_db()
    assert slo.target == 0.999  # not before apply
    result = openslo.apply(planned, manager)
    slo.refresh_from_db()
    assert (result.updated, slo.target, SLO.objects.count()) == ([slo], 0.995, 1)
    assert slo.created_by is None  # an update keeps who created it


@pytest.mark.django_db
def test_a_new_window_replaces_the_burn_rate_rules(slo, manager):
    before = sorted(slo.alert_rules.values_list("threshold", flat=True))
    text = openslo.export_slos([slo]).replace("duration: 30d", "duration: 1w")

    openslo.apply(openslo.parse(text, manager)[0], manager)

    slo.refresh_from_db()
    assert slo.window_days == 7
    assert slo.alert_rules.count() == 4
    assert sorted(slo.alert_rules.values_list("threshold", flat=True)) != before


@pytest.mark.django_db
def test_a_team_is_found_in_its_own_department(payments, research, superuser):
    factories.team(research, "checkout")
    checkout = factories.team(payments, "checkout")
    doc = document(scope="team", agent=None, department="payments", team="checkout")

    [item], errors = openslo.parse(dump(doc), superuser)

    assert errors == []
    assert (item.slo.team, item.slo.department) == (checkout, payments)


@pytest.mark.django_db
def test_target_percent_and_single_string_labels_are_accepted(pay_bot, manager):
    doc = edited("spec.objectives.0", {"targetPercent": 99.5})
    doc["metadata"]["labels"] = {"env": "prod"}

    [item], errors = openslo.parse(dump(doc), manager)

    assert errors == []
    assert item.slo.target == 0.995


@pytest.mark.django_db
def test_other_kinds_are_skipped_with_a_note(pay_bot, manager):
    service = {"apiVersion": "openslo/v1", "kind": "Service", "metadata": {"name": "pay-bot"}, "spec": {}}
    policy = {"apiVersion": "openslo/v1", "kind": "AlertPolicy", "metadata": {"name": "pages"}, "spec": {}}

    result = openslo.plan(dump(service, document(), policy) + "---\n", manager)

    assert result.errors == []
    assert [item.document for item in result.planned] == [2]
    assert result.notes == [
        "document 1 (metadata.name 'pay-bot'): kind 'Service' skipped (only SLOs are imported).",
        "document 3 (metadata.name 'pages'): kind 'AlertPolicy' skipped (only SLOs are imported).",
    ]


# ---------------------------------------------------------------- scoping


@pytest.mark.django_db
def test_another_departments_agent_is_unknown(pay_bot, lab_bot, manager):
    theirs = refused(dump(document(agent="lab-bot")), manager)
    missing = refused(dump(document(agent="no-such-bot")), manager)

    assert theirs == [f"{PREFIX}: {SOURCE}.agent names an unknown agent 'lab-bot'"]
    assert missing == [f"{PREFIX}: {SOURCE}.agent names an unknown agent 'no-such-bot'"]


@pytest.mark.django_db
def test_another_departments_team_and_department_are_unknown(research, manager):
    factories.team(research, "lab")
    team = document(scope="team", agent=None, department="research", team="lab")
    department = document(scope="department", agent=None, department="research")

    assert refused(dump(team), manager) == [f"{PREFIX}: {SOURCE}.department names an unknown department 'research'"]
    assert refused(dump(department), manager) == [
        f"{PREFIX}: {SOURCE}.department names an unknown department 'research'"
    ]


@pytest.mark.django_db
def test_a_department_member_cannot_import_a_fleet_slo(manager, superuser):
    fleet = dump(document(scope="fleet", agent=None))

    assert refused(fleet, manager) == [
        f"{PREFIX}: {SOURCE}.scope fleet is for superusers only: ask one to import fleet SLOs"
    ]
    planned, errors = openslo.parse(fleet, superuser)
    assert errors == []
    [slo] = openslo.apply(planned, superuser).created
    assert (slo.scope, slo.department) == ("fleet", None)


@pytest.mark.django_db
def test_apply_refuses_a_plan_outside_the_users_departments(lab_bot, superuser, manager):
    planned, _ = openslo.parse(dump(document(agent="lab-bot")), superuser)

    result = openslo.apply(planned, manager)

    assert result.errors == [f"{PREFIX}: {SOURCE} names an unknown agent."]
    assert SLO.objects.count() == 0


@pytest.mark.django_db
def test_apply_saves_all_or_nothing(pay_bot, manager):
    second = edited("metadata.displayName", "pay-bot availability (copy)")
    planned, errors = openslo.parse(dump(document(), second), manager)
    assert errors == []
    planned[1].slo.target = 2.0  # invalid by the time it is applied

    result = openslo.apply(planned, manager)

    assert result.created == []
    assert result.errors == [
        "document 2 (metadata.name 'pay-bot-availability'): spec.objectives[0].target: "
        "Ensure this value is less than or equal to 0.99999."
    ]
    assert SLO.objects.count() == 0


# ---------------------------------------------------------------- errors


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("spec.timeWindow.0.duration", "14d", "spec.timeWindow[0].duration must be 7d, 28d or 30d (got '14d')"),
        ("spec.timeWindow.0.duration", "30", "spec.timeWindow[0].duration must be 7d, 28d or 30d (got '30')"),
        (
            "spec.timeWindow.0.isRolling",
            False,
            "spec.timeWindow[0].isRolling must be true: perfops windows are rolling",
        ),
        ("spec.timeWindow", [], "spec.timeWindow must be a list of exactly one window"),
        ("spec.objectives.0.target", 1.5, "spec.objectives[0].target must be between 0.5 and 0.99999 (got 1.5)"),
        ("spec.objectives.0.target", "high", "spec.objectives[0].target must be between 0.5 and 0.99999 (got 'high')"),
        ("spec.objectives.0.target", 0.2, "spec.objectives[0].target must be between 0.5 and 0.99999 (got 0.2)"),
        ("spec.objectives", [], "spec.objectives must be a list of exactly one objective"),
        ("apiVersion", "openslo/v1alpha", "apiVersion must be 'openslo/v1' (got 'openslo/v1alpha')"),
        ("kind", ..., "kind is required (SLO)"),
        ("metadata.name", ..., "metadata.name is required"),
        ("spec", ["a"], "spec must be a mapping, not a list"),
        ("spec.budgetingMethod", "Timeslices", "spec.budgetingMethod must be Occurrences (got 'Timeslices')"),
        ("spec.indicator", ..., "spec.indicator is required"),
        (
            "spec.indicator.spec.ratioMetric.good.metricSource.type",
            "Prometheus",
            "spec.indicator.spec.ratioMetric.good.metricSource.type must be 'perfops' (got 'Prometheus')",
        ),
        (
            "spec.indicator.spec.ratioMetric.total.metricSource.spec.agent",
            "other-bot",
            "spec.indicator.spec.ratioMetric.total.metricSource.spec.agent must be the same as in good ('pay-bot')",
        ),
        (f"{SOURCE}.environment", "prod", f"{SOURCE}.environment must be one of production, staging, development"),
        (f"{SOURCE}.sli", "latency", f"{SOURCE}.thresholdMs is required for sli: latency"),
        (f"{SOURCE}.thresholdMs", 500, f"{SOURCE}.thresholdMs is only for sli: latency"),
        (f"{SOURCE}.team", "checkout", f"{SOURCE}.team is only for a scope that names a team"),
        (f"{SOURCE}.agent", 123, f"{SOURCE}.agent must be a non-empty string (got 123"),
        (f"{SOURCE}.thresholdms", 500, f"{SOURCE} has unknown key(s): thresholdms"),
        ("metadata.displayName", "x" * 129, "metadata.displayName must be at most 128 characters"),
    ],
)
def test_a_bad_document_is_refused_precisely(pay_bot, manager, path, value, message):
    errors = refused(dump(edited(path, value)), manager)

    assert len(errors) == 1
    assert errors[0].startswith(f"{PREFIX}: {message}") or errors[0].startswith(f"document 1: {message}")


@pytest.mark.django_db
def test_the_calendar_and_indicator_ref_are_not_supported(pay_bot, manager):
    calendar = edited("spec.timeWindow.0", {"duration": "1M", "calendar": {"startTime": "2024-01-01 00:00:00"}})
    by_ref = edited("spec.indicator", ...)
    by_ref["spec"]["indicatorRef"] = "pay-bot-sli"

    assert refused(dump(calendar), manager) == [
        f"{PREFIX}: spec.timeWindow[0].calendar is not supported: perfops windows are rolling"
    ]
    assert refused(dump(by_ref), manager) == [
        f"{PREFIX}: spec.indicatorRef is not supported: write the indicator inline"
    ]


@pytest.mark.django_db
def test_a_latency_slo_needs_a_positive_threshold(pay_bot, manager):
    doc = document(sli="latency", thresholdMs=-5)

    assert refused(dump(doc), manager) == [
        f"{PREFIX}: {SOURCE}.thresholdMs must be a number of milliseconds above 0 (got -5)"
    ]


@pytest.mark.django_db
def test_a_document_that_is_not_a_mapping_is_refused(manager):
    assert refused("- a\n- b\n", manager) == [
        "document 1: must be a mapping (one OpenSLO object per document), not a list"
    ]


@pytest.mark.django_db
def test_one_bad_document_refuses_the_whole_import(pay_bot, manager):
    errors = refused(
        dump(document(), edited("metadata.name", "second", edited("spec.objectives.0.target", 7))), manager
    )

    assert errors == [
        "document 2 (metadata.name 'second'): spec.objectives[0].target must be between 0.5 and 0.99999 (got 7)"
    ]


@pytest.mark.django_db
def test_the_same_slo_twice_in_one_file_is_refused(pay_bot, manager):
    errors = refused(dump(document(), edited("metadata.name", "again")), manager)

    assert errors == ["document 2 (metadata.name 'again'): the same SLO (name, environment and scope) as document 1."]


@pytest.mark.django_db
def test_a_yaml_syntax_error_names_its_line(manager):
    errors = refused("apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: [oops}\n", manager)

    assert len(errors) == 1
    assert errors[0].startswith("YAML syntax error at line 3")


@pytest.mark.django_db
def test_unsafe_tags_are_refused(manager):
    errors = refused("!!python/object/apply:os.system ['true']\n", manager)

    assert errors[0].startswith("YAML syntax error at line 1")


@pytest.mark.django_db
def test_more_than_500_documents_are_refused(manager):
    text = "---\nkind: Service\n" * 501

    assert refused(text, manager) == ["More than 500 documents: split the file into several imports."]


@pytest.mark.django_db
def test_more_than_1_mib_is_refused(manager):
    text = "# padding\n" * (openslo.MAX_BYTES // 10 + 1)

    assert refused(text, manager) == ["The YAML is larger than 1 MiB: split it into several imports."]


@pytest.mark.django_db
def test_an_alias_bomb_is_refused_before_it_expands(manager):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]

    assert refused("\n".join(levels) + "\n", manager) == ["YAML aliases (*a) are not supported at line 2, column 8."]
