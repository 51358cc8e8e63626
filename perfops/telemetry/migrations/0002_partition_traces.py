"""On PostgreSQL, rebuild telemetry_trace as a table partitioned by day on started_at.

Django created the plain table in 0001; this swaps it for a partitioned one with the same
columns, defaults, indexes and foreign keys. A partitioned table's unique keys must include the
partition key, so the primary key becomes (trace_id, started_at): a retried record carries the
same start time and is still ignored. SQLite keeps the plain table.
"""

from django.db import migrations

TABLE = "telemetry_trace"


def partition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {TABLE}")  # noqa: S608  (constant table name)
        if cursor.fetchone()[0]:
            raise RuntimeError(f"{TABLE} is not empty; partition it by hand before migrating.")
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname <> %s",
            [TABLE, f"{TABLE}_pkey"],
        )
        indexes = cursor.fetchall()
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f'",
            [TABLE],
        )
        foreign_keys = cursor.fetchall()
        cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {TABLE}_unpartitioned")
        cursor.execute(
            f"CREATE TABLE {TABLE} (LIKE {TABLE}_unpartitioned INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS) "
            "PARTITION BY RANGE (started_at)"
        )
        cursor.execute(f"DROP TABLE {TABLE}_unpartitioned")
        # User: ingest's ON CONFLICT dedupe of retried records, and the request page's lookup by id.
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (trace_id, started_at)")
        for _name, definition in indexes:
            cursor.execute(definition.replace(f"{TABLE}_unpartitioned", TABLE))
        for name, definition in foreign_keys:
            cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {name} {definition}")


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    raise RuntimeError("Reverting the trace partitioning is not supported; restore from a backup.")


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0001_initial")]

    operations = [migrations.RunPython(partition, unpartition)]
