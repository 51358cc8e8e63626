"""The rollup through a real Celery worker and its beat schedule, against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum

from perfops.metrics.levels import Grain, View
from perfops.metrics.models import DirtyBucket, Rollup
from tests import factories
from tests.metrics.conftest import ingest

ROOT = Path(__file__).resolve().parents[2]


def worker_environment(tmp_path: Path) -> dict[str, str]:
    """The worker's settings: this test database, a broker of its own, marks claimed without settling."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    env.update(
        DJANGO_SETTINGS_MODULE="perfops.settings",
        PERFOPS_VAR_DIR=str(tmp_path),
        PERFOPS_ROLLUP_SETTLE_S="0",
        PERFOPS_HTTPS="0",
        LOG_LEVEL="INFO",
    )
    database = connection.settings_dict
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = (
            f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/"
            f"{database['NAME']}"
        )
    else:
        env.pop("DATABASE_URL", None)
        (tmp_path / "perfops.sqlite3").symlink_to(Path(database["NAME"]).resolve())
    return env


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_rolls_up_ingested_traces_on_its_beat_schedule(tmp_path, superuser, payments):
    if connection.vendor == "sqlite" and "mode=memory" in str(connection.settings_dict["NAME"]):
        pytest.skip("the SQLite test database is in memory; another process cannot open it")
    factories.agent("pay-bot", payments)
    now = datetime.now(UTC)
    records = [
        factories.record(agent="pay-bot", started_at=factories.iso(now - timedelta(seconds=40 + i))) for i in range(25)
    ]
    assert ingest(records, superuser) == 25
    assert DirtyBucket.objects.exists()
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "perfops", "worker", "--beat", "--pool", "solo", "--loglevel", "INFO"],
        cwd=ROOT,
        env=worker_environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        rolled: int = 0
        while time.monotonic() < deadline and worker.poll() is None:
            rolled = int(Rollup.objects.filter(view=View.FLEET, grain_s=Grain.S30).aggregate(n=Sum("count"))["n"] or 0)
            if rolled == 25 and not DirtyBucket.objects.exists():
                break
            time.sleep(0.5)
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert rolled == 25, output[-3000:]
    assert not DirtyBucket.objects.exists()
    assert "perfops.metrics.tasks.rollup_tick" in output
    assert float(settings.CELERY_BEAT_SCHEDULE["rollup-tick"]["schedule"]) <= 10  # type: ignore[arg-type]
