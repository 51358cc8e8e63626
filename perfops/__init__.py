"""perfops: a self-hosted performance control room for fleets of AI agents."""

from perfops.celery import app as celery_app

__all__ = ["celery_app"]
