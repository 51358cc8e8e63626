"""Trace ingest: bounded body reading, record validation, OTLP mapping and batch storage."""
