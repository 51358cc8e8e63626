"""WSGI entry point for gunicorn."""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "perfops.settings")
application = get_wsgi_application()

# Import every view now (Django does it on the first request) so they are frozen below too.
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018

# Everything loaded so far (Django, the apps, the URL map) lives as long as the process: move it
# out of the cyclic collector's sight, so the collections that ingest's allocations trigger do not
# walk hundreds of thousands of objects each time.
gc.freeze()
