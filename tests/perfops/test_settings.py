"""Settings come from the environment: embedded defaults, production switches, loud failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from perfops import env

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DEBUG": "0",
    "DATABASE_URL": "postgres://perfops:secret@db.internal:5432/perfops",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "SECRET_KEY": "k" * 20 + "-production-secret-key-with-enough-entropy-0123456789",
    "ALLOWED_HOSTS": "perfops.example.com",
}


def run_django(code: str, extra_env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG")}
    clean.update({"DJANGO_SETTINGS_MODULE": "perfops.settings", "PERFOPS_VAR_DIR": str(tmp_path), **extra_env})
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120, check=False
    )


SHOW = (
    "import django, json; django.setup(); from django.conf import settings as s;"
    "print(json.dumps({'engine': s.DATABASES['default']['ENGINE'], 'name': str(s.DATABASES['default']['NAME']),"
    "'cache': s.CACHES['default']['BACKEND'], 'broker': s.CELERY_BROKER_URL, 'ssl': s.SECURE_SSL_REDIRECT}))"
)


def test_nothing_set_gives_the_embedded_default(tmp_path):
    done = run_django(SHOW, {}, tmp_path)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["engine"] == "django.db.backends.sqlite3"
    assert shown["name"] == str(tmp_path / "perfops.sqlite3")
    assert shown["cache"].endswith("LocMemCache")
    assert shown["broker"].startswith("filesystem://")
    assert shown["ssl"] is False
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_database_and_redis_urls_switch_to_production_services(tmp_path):
    done = run_django(SHOW, PRODUCTION, tmp_path)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["engine"] == "django.db.backends.postgresql"
    assert shown["name"] == "perfops"
    assert shown["cache"].endswith("RedisCache")
    assert shown["broker"] == "redis://cache.internal:6379/0"
    assert shown["ssl"] is True


def test_the_production_configuration_passes_the_deploy_checks(tmp_path):
    done = run_django(
        "import sys; from django.core.management import execute_from_command_line;"
        "execute_from_command_line(['manage.py', 'check', '--deploy', '--fail-level', 'WARNING'])",
        PRODUCTION,
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG='maybe' is not a boolean"),
        ("DATABASE_URL", "mysql://db/perfops", "DATABASE_URL must start with one of"),
        ("REDIS_URL", "redis://", "REDIS_URL has no host"),
        ("PERFOPS_RAW_RETENTION_DAYS", "0", "below the minimum"),
        ("PERFOPS_INGEST_MAX_RECORDS", "lots", "is not an integer"),
        ("SECRET_KEY", "short", "at least 50 characters"),
    ],
)
def test_a_bad_value_stops_start_up_with_the_variable_named(tmp_path, variable, value, message):
    done = run_django("import django; django.setup()", {variable: value}, tmp_path)
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert message in done.stderr


def test_the_typed_helpers_read_their_types(monkeypatch):
    monkeypatch.setenv("PERFOPS_TEST_BOOL", "yes")
    monkeypatch.setenv("PERFOPS_TEST_INT", "42")
    monkeypatch.setenv("PERFOPS_TEST_LIST", "a, b,,c")
    assert env.env_bool("PERFOPS_TEST_BOOL", False) is True
    assert env.env_int("PERFOPS_TEST_INT", 0, maximum=100) == 42
    assert env.env_list("PERFOPS_TEST_LIST", []) == ["a", "b", "c"]
    assert env.env_str("PERFOPS_TEST_UNSET", "fallback") == "fallback"
    with pytest.raises(ImproperlyConfigured, match="above the maximum"):
        env.env_int("PERFOPS_TEST_INT", 0, maximum=10)


def test_a_database_url_becomes_a_django_database():
    database = env.database_from_url("DATABASE_URL", "postgres://u%40x:p%2Fw@host:6543/name?sslmode=require")
    assert database["USER"] == "u@x"
    assert database["PASSWORD"] == "p/w"
    assert (database["HOST"], database["PORT"], database["NAME"]) == ("host", "6543", "name")
    assert database["OPTIONS"] == {"sslmode": "require"}
    with pytest.raises(ImproperlyConfigured, match="no database name"):
        env.database_from_url("DATABASE_URL", "postgres://host:5432/")
