"""The Celery application: tasks live in each app's tasks.py, settings come from CELERY_*."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "perfops.settings")

app = Celery("perfops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
