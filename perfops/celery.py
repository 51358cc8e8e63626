"""The Celery application: tasks live in each app's tasks.py, settings come from CELERY_*."""

import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "perfops.settings")

app = Celery("perfops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# What the dashboard reads from the background passes (baselines, error anomalies, steps, recommendations)
# would otherwise wait a whole interval after a worker starts: beat's first run of an entry is one
# interval after it starts. Each is idempotent, so several workers starting at once do no harm.
STARTUP_TASKS = (
    "interventions.tasks.refresh_baselines",
    "interventions.tasks.detect_error_anomalies",
    "interventions.tasks.flag_change_points",
    "interventions.tasks.generate_recommendations",
)


@worker_ready.connect
def run_analytics_once(sender: object = None, **kwargs: object) -> None:
    for name in STARTUP_TASKS:
        app.send_task(name)
