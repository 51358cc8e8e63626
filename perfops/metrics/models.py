"""Rollup rows, the dirty-bucket marks that drive them, and the rollup's own state."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import models
from django.db.models import Q

from perfops.metrics.levels import Grain, View
from perfops.telemetry.choices import Environment, ErrorType, TraceStatus

ENVIRONMENT_CODES = list(enumerate(Environment.labels))
STATUS_CODES = [*enumerate(TraceStatus.labels), (3, "Any (total view)")]
ERROR_TYPE_CODES = [(0, "None"), *((code, label) for code, label in enumerate(ErrorType.labels, start=1))]


# The stored status codes (perfops.metrics.cells.STATUSES order) of failed requests: errors and timeouts.
FAILED_STATUS_CODES = (list(TraceStatus.values).index("error"), list(TraceStatus.values).index("timeout"))


class Tier(models.IntegerChoices):
    """The spec's performance tiers: fast < 100 ms <= normal < 500 ms <= slow < 2 s <= critical."""

    FAST = 0, "Fast (<100 ms)"
    NORMAL = 1, "Normal (100-500 ms)"
    SLOW = 2, "Slow (500 ms-2 s)"
    CRITICAL = 3, "Critical (>2 s)"
    ANY = 4, "Any (total view)"


class Rollup(models.Model):
    """What the traces of one bucket and one cell of a view add up to.

    A cell is (environment, status, error type, tier) plus the view's dimensions; dimensions a view
    does not keep hold 0 or "". Rows are only ever replaced as a whole bucket, never incremented.
    """

    grain_s = models.PositiveIntegerField(choices=Grain.choices)
    view = models.PositiveSmallIntegerField(choices=View.choices)
    # Epoch seconds (UTC) rather than a datetime: the same integer on PostgreSQL and SQLite, and the
    # query layer buckets it with numpy without converting a datetime per row.
    bucket_epoch_s = models.BigIntegerField()
    # Environment, status and error type are small codes (indexes into the choices' values, see
    # perfops.metrics.cells): the time index compares integers, a third faster to write than text.
    environment = models.PositiveSmallIntegerField(choices=ENVIRONMENT_CODES)
    # Ids without foreign keys: 0 means "not kept by this view" (or no team), and rollups outlive
    # nothing they point at (agents with traces cannot be deleted; departments and teams are ids).
    department_id = models.IntegerField(default=0)
    team_id = models.IntegerField(default=0)
    agent_id = models.IntegerField(default=0)
    version = models.CharField(max_length=64, blank=True)
    intent = models.CharField(max_length=64, blank=True)
    status = models.PositiveSmallIntegerField(choices=STATUS_CODES)
    error_type = models.PositiveSmallIntegerField(choices=ERROR_TYPE_CODES, default=0)
    tier = models.PositiveSmallIntegerField(choices=Tier.choices)
    count = models.BigIntegerField()
    errors = models.BigIntegerField(default=0, help_text="Traces with status error.")
    timeouts = models.BigIntegerField(default=0, help_text="Traces with status timeout.")
    latency_sum_ms = models.FloatField()
    latency_min_ms = models.FloatField()
    latency_max_ms = models.FloatField()
    # perfops.metrics.sketch: packed (bucket, count) entries of the latency distribution.
    sketch = models.BinaryField()
    # perfops.metrics.cells.STORED_TIMING: per phase / dependency label, calls, errors, summed start and duration.
    timings = models.BinaryField(default=b"")
    input_tokens_sum = models.BigIntegerField(default=0)
    output_tokens_sum = models.BigIntegerField(default=0)
    traces_with_tokens = models.BigIntegerField(default=0)
    cache_hits = models.BigIntegerField(default=0)
    profiled = models.BigIntegerField(default=0)

    class Meta:
        indexes = [
            # Users: every pre-merged read (fleet, department, team, intent, version views) of one grain,
            # environment and time range; the replacement of a bucket; retention by grain and age.
            models.Index(fields=["view", "grain_s", "environment", "bucket_epoch_s"], name="rollup_view_time_idx"),
            # User: reads of one or a few agents in an environment (agent page, agent and version filters).
            models.Index(
                fields=["agent_id", "grain_s", "environment", "bucket_epoch_s"],
                name="rollup_agent_time_idx",
                condition=Q(view=View.AGENT),
            ),
            models.Index(
                fields=["agent_id", "grain_s", "environment", "bucket_epoch_s"],
                name="rollup_agent_total_time_idx",
                condition=Q(view=View.AGENT_TOTAL),
            ),
            # User: the error treemap (failed requests by error type and agent): only failed rows, a few percent.
            models.Index(
                fields=["grain_s", "environment", "bucket_epoch_s"],
                name="rollup_failed_time_idx",
                condition=Q(view=View.AGENT, status__in=FAILED_STATUS_CODES),
            ),
            # Users: an intent filter, or a team filter, over a long range (only those views' rows).
            models.Index(
                fields=["grain_s", "environment", "intent", "bucket_epoch_s"],
                name="rollup_intent_time_idx",
                condition=Q(view=View.INTENT),
            ),
            models.Index(
                fields=["grain_s", "environment", "team_id", "bucket_epoch_s"],
                name="rollup_team_time_idx",
                condition=Q(view=View.TEAM),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_view_display()} {self.get_grain_s_display()} @ {self.bucket_start:%Y-%m-%d %H:%M:%S}"

    @property
    def bucket_start(self) -> datetime:
        return datetime.fromtimestamp(self.bucket_epoch_s, tz=UTC)


class DirtyBucket(models.Model):
    """A note that traces of a 30-second bucket changed, written by ingest with them (perfops.metrics.dirty)."""

    bucket_epoch_s = models.BigIntegerField()
    # When ingest wrote it: a bucket's notes settle briefly before the rollup takes them.
    marked_at = models.DateTimeField()
    # The writing transaction's id (PostgreSQL; 0 on SQLite): taken only once every older one has ended.
    writer_xid = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["bucket_epoch_s"]
        indexes = [
            # User: the rollup's claim (buckets with notes, oldest first) and its delete of what it took.
            models.Index(fields=["bucket_epoch_s", "writer_xid"], name="dirtybucket_bucket_idx"),
        ]

    def __str__(self) -> str:
        return f"{datetime.fromtimestamp(self.bucket_epoch_s, tz=UTC):%Y-%m-%d %H:%M:%S} (xid {self.writer_xid})"


class RollupState(models.Model):
    """The rollup's single row: who is running it (a lease), how far coarse buckets are built, how it went."""

    SINGLETON = 1

    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    # Every 5-minute, hourly and daily bucket that ends at or before this moment has been built.
    coarse_through = models.DateTimeField(null=True, blank=True)
    # Bumped whenever rollup rows change: part of every cached chart's key, so no chart outlives new data.
    generation = models.BigIntegerField(default=0)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_run_seconds = models.FloatField(null=True, blank=True)
    last_run_buckets = models.IntegerField(default=0)
    last_run_traces = models.BigIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "rollup state"

    def __str__(self) -> str:
        return f"rollup state (generation {self.generation})"

    @classmethod
    def get(cls) -> RollupState:
        state, _ = cls.objects.get_or_create(pk=cls.SINGLETON)
        return state
