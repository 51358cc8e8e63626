"""Timed interventions work under Celery beat."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from interventions import loadtest, profiling


@shared_task(time_limit=120, soft_time_limit=100)
def sweep_profiling() -> int:
    """End profiling sessions past their expiry and write missing reports (every minute; idempotent)."""
    return profiling.sweep()


# A run lasts its duration (bounded by PERFOPS_LOADTEST_MAX_DURATION_S) plus the last answers.
_LOADTEST_LIMIT_S = settings.PERFOPS["LOADTEST_MAX_DURATION_S"] + 300


@shared_task(time_limit=_LOADTEST_LIMIT_S + 30, soft_time_limit=_LOADTEST_LIMIT_S, acks_late=False)
def run_load_test(test_id: int) -> str:
    """Run one scheduled load test (claimed once, whoever calls this and however often)."""
    return loadtest.run_in_thread_safe(test_id)


@shared_task(time_limit=60, soft_time_limit=50)
def start_due_load_tests() -> list[int]:
    """Start scheduled tests whose time has come, in case their scheduled task was lost (every minute)."""
    return loadtest.start_due()


@shared_task(time_limit=600, soft_time_limit=570)
def generate_report(report_id: int) -> str:
    """Write one queued report (claimed once; progress on its row)."""
    from interventions import reports

    return reports.generate(report_id)


@shared_task(time_limit=600, soft_time_limit=570)
def check_new_versions() -> dict[str, int]:
    """Judge each new version against the one before it and flag regressions (every 10 minutes)."""
    from perfops.analytics import detect

    return detect.check_new_versions()


@shared_task(time_limit=1200, soft_time_limit=1140)
def flag_change_points() -> dict[str, int]:
    """Flag steps in each busy agent's hourly latency and error series of the last two days (hourly)."""
    from perfops.analytics import changes

    return changes.flag_recent()


@shared_task(time_limit=1200, soft_time_limit=1140)
def generate_recommendations() -> dict[str, int]:
    """Write configuration recommendations for each busy agent from its own evidence (hourly)."""
    from perfops.analytics import advisor

    return advisor.recommend_all()


@shared_task(time_limit=1200, soft_time_limit=1140)
def refresh_baselines() -> dict[str, int]:
    """Store each busy agent's typical request, for the slow-request list's root causes (hourly)."""
    from perfops.analytics import causes

    return causes.refresh_baselines()


@shared_task(time_limit=280, soft_time_limit=250)
def detect_error_anomalies() -> dict[str, int]:
    """Judge the last hours of every agent's error types against their history (every 5 minutes)."""
    from perfops.analytics import errors

    return errors.detect_all()
