"""perfops settings, read from environment variables (see README, "Settings").

Nothing set gives the embedded default: SQLite under var/ in WAL mode, Celery on a local
filesystem transport, the local-memory cache. DATABASE_URL (PostgreSQL) and REDIS_URL switch
the database and the broker + cache to production services independently.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from perfops.env import database_from_url, env_bool, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PERFOPS_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DATABASE_URL = env_url("DATABASE_URL", schemes=("postgres", "postgresql"))
REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss"))

DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else a random key generated once and kept in var/."""
    configured = env_str("SECRET_KEY")
    if configured:
        if len(configured) < 50:
            raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters long")
        return configured
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(64))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# HTTPS hardening is on by default once a production database is configured and DEBUG is off,
# so a deployment that forgets a variable is secure rather than open. Turn it off explicitly
# (PERFOPS_HTTPS=0) only for a local production-like run such as `make serve`.
HTTPS = env_bool("PERFOPS_HTTPS", DATABASE_URL is not None and not DEBUG)
SECURE_SSL_REDIRECT = HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", HTTPS)
if env_bool("PERFOPS_BEHIND_PROXY", False):
    # Trust X-Forwarded-Proto only when a TLS-terminating proxy is known to set it.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SECURE_REFERRER_POLICY = "same-origin"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "django_htmx",
    "auditlog",
    "perfops.access",
    "perfops.telemetry",
    "perfops.metrics",
    "perfops.dashboard",
    "perfops.analytics",
    "slos",
    "interventions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "perfops.strictness.RefuseNul",  # PostgreSQL text cannot hold NUL: a 400 here rather than a 500 in a lookup
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    "perfops.access.audit.OneEntryPerObjectMiddleware",
]

ROOT_URLCONF = "perfops.urls"
WSGI_APPLICATION = "perfops.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if DATABASE_URL:
    _database = database_from_url("DATABASE_URL", DATABASE_URL)
    _database["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
    _database["CONN_HEALTH_CHECKS"] = True
else:
    _database = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "perfops.sqlite3",
        "OPTIONS": {
            # WAL lets the dashboard read while ingest writes; IMMEDIATE transactions take the
            # write lock up front so concurrent writers queue instead of failing to upgrade.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "perfops.cache.ResilientRedisCache",  # an outage is a miss, not a 500
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "perfops",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"
LOGIN_REDIRECT_URL = "dashboard:performance"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "perfops.dashboard.staticfiles.PlotlyFinder",
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Ingest reads its own bodies in bounded chunks (perfops.telemetry.ingest.body); this limit
# is for the admin and ordinary forms.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# --- Celery -----------------------------------------------------------------------------------
# The embedded broker is kombu's filesystem transport: a queue of files under var/celery/ that the
# web processes write and the demo's worker reads. "localhost" only names it (no network is used).
CELERY_BROKER_URL = REDIS_URL or "filesystem://localhost/"
if not REDIS_URL:
    _celery_dirs = {name: VAR_DIR / "celery" / name for name in ("queue", "processed", "control")}
    for _folder in _celery_dirs.values():
        _folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_celery_dirs["queue"]),
        "data_folder_out": str(_celery_dirs["queue"]),
        "processed_folder": str(_celery_dirs["processed"]),
        "control_folder": str(_celery_dirs["control"]),
        "store_processed": False,
    }
else:
    # A killed worker's task comes back after an hour (rollup catch-ups may run that long); alert notices do not
    # wait for it: slos.tasks.resend_lost_notifications sends again those with no attempt after 5 minutes.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TIMEZONE = "UTC"
# Alert emails: SMTP when EMAIL_HOST is set; otherwise each message is written to var/mail/, so none is lost.
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "perfops <perfops@localhost>")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(VAR_DIR / "mail")

CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "sweep-pending-spans": {"task": "perfops.telemetry.tasks.sweep_pending_spans", "schedule": 60.0},
    "ensure-trace-partitions": {
        "task": "perfops.telemetry.tasks.ensure_trace_partitions",
        "schedule": 3600.0,
    },
    # Dirty buckets settle for ROLLUP_SETTLE_S, then the next tick rolls them: a trace shows in the
    # charts within settle + tick + the tick's own time (about 30 s).
    "rollup-tick": {"task": "perfops.metrics.tasks.rollup_tick", "schedule": 10.0},
    "apply-retention": {"task": "perfops.metrics.tasks.apply_retention", "schedule": 3600.0},
    "evaluate-alerts": {"task": "slos.tasks.evaluate_alerts", "schedule": 60.0},
    "resend-lost-notifications": {"task": "slos.tasks.resend_lost_notifications", "schedule": 120.0},
    # Profiling ends within a minute of its expiry even if anything scheduled for it was lost.
    "sweep-profiling": {"task": "interventions.tasks.sweep_profiling", "schedule": 60.0},
    # Load tests are also enqueued for their time; this starts any whose task was lost.
    "start-due-load-tests": {"task": "interventions.tasks.start_due_load_tests", "schedule": 30.0},
    # New versions are judged against the one before them; regressions are flagged for an engineer.
    "check-new-versions": {"task": "interventions.tasks.check_new_versions", "schedule": 600.0},
    "flag-change-points": {"task": "interventions.tasks.flag_change_points", "schedule": 3600.0},
    "generate-recommendations": {"task": "interventions.tasks.generate_recommendations", "schedule": 3600.0},
    "refresh-baselines": {"task": "interventions.tasks.refresh_baselines", "schedule": 3600.0},
    "detect-error-anomalies": {"task": "interventions.tasks.detect_error_anomalies", "schedule": 300.0},
}

# --- REST API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "perfops.access.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's, refusing NUL characters in strings (PostgreSQL text cannot hold them): a 400, not a 500.
    "DEFAULT_PARSER_CLASSES": ["perfops.strictness.JSONParser"],
    # DRF's, except that a limit or offset that is not a whole number in range is a 400 rather than ignored.
    "DEFAULT_PAGINATION_CLASS": "perfops.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    # drf-spectacular's, plus the error answers of every operation and the nulls and blanks of read-only fields.
    "DEFAULT_SCHEMA_CLASS": "perfops.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "perfops API",
    "DESCRIPTION": "Ingest traces, read metrics and automate interventions. "
    "Authenticate with `Authorization: Bearer <token>`; tokens carry the scopes ingest, read and automation.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "TraceStatusEnum": "perfops.telemetry.choices.TraceStatus",
        "DependencyStatusEnum": "perfops.telemetry.choices.DependencyStatus",
        "EnvironmentEnum": "perfops.telemetry.choices.Environment",
        "ReportFormatEnum": "interventions.models.Report.Format",
        "ChannelFormatEnum": "slos.models.NotificationChannel.Format",
        # Both would be named ReportStatusEnum (a report's status, a profiling session's report_status).
        "ReportStatusEnum": "interventions.models.Report.Status",
        "ProfilingReportStatusEnum": "interventions.models.ProfilingSession.ReportStatus",
    },
}

# --- perfops ----------------------------------------------------------------------------------
PERFOPS = {
    # Raw traces older than this are refused at ingest and dropped by retention (a day partition at a time).
    "RAW_RETENTION_DAYS": env_int("PERFOPS_RAW_RETENTION_DAYS", 30, minimum=1, maximum=3650),
    # Hourly and daily rollups are kept this long; 5-minute ones for days, 30-second ones for hours (the
    # ranges that need them are recent; older ones read the next coarser grain).
    "ROLLUP_RETENTION_DAYS": env_int("PERFOPS_ROLLUP_RETENTION_DAYS", 400, minimum=1, maximum=36_500),
    "ROLLUP_5M_RETENTION_DAYS": env_int("PERFOPS_ROLLUP_5M_RETENTION_DAYS", 2, minimum=1, maximum=90),
    "ROLLUP_30S_RETENTION_HOURS": env_int("PERFOPS_ROLLUP_30S_RETENTION_HOURS", 12, minimum=1, maximum=24 * 14),
    # How long a dirty bucket waits for more traces before the rollup recomputes it (bounds re-reads).
    "ROLLUP_SETTLE_S": env_int("PERFOPS_ROLLUP_SETTLE_S", 15, minimum=0, maximum=600),
    # Clock skew allowed for started_at in the future.
    "INGEST_MAX_FUTURE_S": env_int("PERFOPS_INGEST_MAX_FUTURE_S", 300, minimum=0, maximum=86_400),
    "INGEST_MAX_RECORDS": env_int("PERFOPS_INGEST_MAX_RECORDS", 5000, minimum=1, maximum=100_000),
    "INGEST_MAX_BYTES": env_int("PERFOPS_INGEST_MAX_BYTES", 10 * 1024 * 1024, minimum=1024),
    # OTLP child spans wait this long for their root span before they are dropped.
    "OTLP_ORPHAN_TTL_S": env_int("PERFOPS_OTLP_ORPHAN_TTL_S", 600, minimum=10, maximum=86_400),
    # Load tests: the longest run and the highest arrival rate a person may schedule.
    "LOADTEST_MAX_DURATION_S": env_int("PERFOPS_LOADTEST_MAX_DURATION_S", 600, minimum=5, maximum=86_400),
    "LOADTEST_MAX_RATE": env_int("PERFOPS_LOADTEST_MAX_RATE", 500, minimum=1, maximum=100_000),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
