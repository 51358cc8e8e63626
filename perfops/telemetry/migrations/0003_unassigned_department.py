"""Create the department that auto-registered agents land in, so ingest never races to create it."""

from django.db import migrations


def create(apps, schema_editor):
    Department = apps.get_model("telemetry", "Department")
    Department.objects.get_or_create(slug="unassigned", defaults={"name": "Unassigned (auto-registered)"})


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0002_partition_traces")]

    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
