"""Model fields of the telemetry app."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper


class PlainJSONField(models.JSONField):
    """JSON kept as PostgreSQL `json` (checked text) instead of `jsonb`.

    Trace phases, calls and attributes are written ~50k rows/s and read whole, never searched by
    key in SQL; `jsonb` would convert every value on COPY for nothing (measured: a quarter of the
    insert cost). On SQLite it is Django's ordinary JSONField.
    """

    def db_type(self, connection: BaseDatabaseWrapper) -> str | None:
        if connection.vendor == "postgresql":
            return "json"
        return super().db_type(connection)

    def get_db_prep_value(self, value: Any, connection: BaseDatabaseWrapper, prepared: bool = False) -> Any:
        if value is None or hasattr(value, "as_sql"):
            return super().get_db_prep_value(value, connection, prepared)
        # Ingest's records hold msgspec structs (dependency calls); store them as plain JSON.
        value = msgspec.to_builtins(value)
        if connection.vendor == "postgresql":
            from psycopg.types.json import Json

            return Json(value, dumps=lambda obj: orjson.dumps(obj).decode())
        return super().get_db_prep_value(value, connection, prepared)

    def from_db_value(self, value: Any, expression: Any, connection: BaseDatabaseWrapper) -> Any:
        # psycopg already decodes `json` columns (Django only turns that off for jsonb).
        if value is None or not isinstance(value, str):
            return value
        return super().from_db_value(value, expression, connection)
