"""Send trace records to perfops' ingest API in gzip JSON batches, retrying until they are stored.

A batch leaves the queue only when the server answered for it: stored (200), or refused for good
(400: every record invalid, logged with the reasons). Network errors, 429 and 5xx keep the batch
and retry it with exponential backoff. Nothing is dropped without a log line and a counter.
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import orjson

logger = logging.getLogger("perfops.simulate")

INGEST_PATH = "/api/v1/traces"
# (status, body, Retry-After) for a gzip JSON body; status 0 means no HTTP answer at all.
Post = Callable[[bytes], tuple[int, bytes, str | None]]


@dataclass(frozen=True)
class SenderStats:
    """Counters since start; `pending` is what is queued or in flight."""

    sent: int = 0  # records the server answered for with 200
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failures: int = 0  # POSTs that failed and were (or will be) retried
    dropped: int = 0  # records discarded because the queue overflowed while the server was unreachable
    pending: int = 0

    def line(self) -> str:
        return (
            f"sent {self.sent:,}, accepted {self.accepted:,}, duplicates {self.duplicates:,}, "
            f"rejected {self.rejected:,}, failures {self.failures:,}, pending {self.pending:,}"
            + (f", dropped {self.dropped:,}" if self.dropped else "")
        )


class BatchSender:
    """A background thread that POSTs queued records about every `interval_s`."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        interval_s: float = 1.0,
        max_batch: int = 2000,
        max_pending: int = 500_000,
        timeout_s: float = 15.0,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        post: Post | None = None,
        on_fatal: Callable[[], None] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"Not an http(s) URL: {url!r}")
        self.endpoint = url.rstrip("/") + INGEST_PATH
        self._token = token
        self.interval_s = interval_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._post = post or self._urllib_post
        self._queue: deque[dict[str, Any]] = deque()
        self._inflight: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_until = 0.0
        self._stats = SenderStats()
        self._thread: threading.Thread | None = None
        self.fatal: str | None = None  # set when retrying cannot help (a bad token): the caller should stop
        self._on_fatal = on_fatal
        self._failing_since = 0  # consecutive failed POSTs
        self._last_warning = 0.0

    @property
    def stats(self) -> SenderStats:
        with self._lock:
            return replace(self._stats, pending=len(self._queue) + len(self._inflight))

    def _count(self, **deltas: int) -> None:
        with self._lock:
            self._stats = replace(self._stats, **{k: getattr(self._stats, k) + v for k, v in deltas.items()})

    def submit(self, records: list[dict[str, Any]]) -> None:
        """Queue records; when the queue is full (server down for long), the oldest are dropped, loudly."""
        if not records:
            return
        with self._lock:
            self._queue.extend(records)
            overflow = len(self._queue) - self.max_pending
            for _ in range(max(overflow, 0)):
                self._queue.popleft()
            if overflow > 0:
                self._stats = replace(self._stats, dropped=self._stats.dropped + overflow)
        if overflow > 0:
            logger.error("ingest queue full: dropped the %d oldest records (server unreachable?)", overflow)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="perfops-ingest-sender", daemon=True)
        self._thread.start()

    def stop(self, flush_timeout_s: float = 15.0) -> SenderStats:
        """Send what is queued (for at most `flush_timeout_s`), then stop; returns the final counters."""
        self._drain_until = time.monotonic() + flush_timeout_s
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(flush_timeout_s + self.timeout_s + 1.0)
        final = self.stats
        if final.pending:
            logger.error("stopped with %d records not stored (the server did not take them in time)", final.pending)
        return final

    def give_up(self) -> None:
        """Stop flushing now (a second Ctrl-C): what is still queued is reported as not stored."""
        self._drain_until = 0.0
        self._stop.set()
        self._wake.set()

    def _draining(self) -> bool:
        return self._stop.is_set() and time.monotonic() < self._drain_until and self.fatal is None

    def _run(self) -> None:
        delay = self.backoff_s[0]
        while True:
            if self._stop.is_set() and not self._draining():
                return
            with self._lock:
                if not self._inflight:
                    count = min(self.max_batch, len(self._queue))
                    self._inflight = [self._queue.popleft() for _ in range(count)]
                batch = self._inflight
                more = len(self._queue) >= self.max_batch
            if not batch:
                if self._stop.is_set():
                    return
                self._pause(self.interval_s)
                continue
            outcome = self._send(batch)
            if outcome == "done":
                with self._lock:
                    self._inflight = []
                delay = self.backoff_s[0]
                if not more and not self._stop.is_set():
                    self._pause(self.interval_s)
            elif outcome == "fatal":
                return
            else:
                self._pause(outcome if isinstance(outcome, float) else delay)
                delay = min(delay * 2, self.backoff_s[1])

    def _pause(self, seconds: float) -> None:
        """Wait before the next POST: until stop() while running; while draining, no longer than the flush allows."""
        if self._stop.is_set():
            time.sleep(min(seconds, max(self._drain_until - time.monotonic(), 0.0)))
            return
        self._wake.wait(seconds)
        self._wake.clear()

    def _send(self, batch: list[dict[str, Any]]) -> str | float | None:
        """POST one batch: 'done' (answered for good), 'fatal', or a retry (a float: the server's Retry-After)."""
        body = gzip.compress(orjson.dumps({"traces": batch}), compresslevel=5)
        try:
            status, payload, retry_after = self._post(body)
        except Exception as exc:  # the transport is pluggable; any failure of it is a retry, never a lost batch
            status, payload, retry_after = 0, str(exc).encode(), None
        if status and status < 500 and status != 429 and self._failing_since:
            logger.info("ingest answers again after %d failed attempts", self._failing_since)
            self._failing_since = 0
        if status == 200:
            answer = _json(payload)
            rejected = answer.get("rejected") or []
            self._count(
                sent=len(batch),
                accepted=int(answer.get("accepted", 0)),
                duplicates=int(answer.get("duplicates", 0)),
                rejected=len(rejected),
            )
            if rejected:
                logger.warning("ingest refused %d of %d records, e.g. %s", len(rejected), len(batch), rejected[0])
            return "done"
        if status in (401, 403):
            self.fatal = f"ingest answered {status}: {_detail(payload)} (check the token and its scope)"
            logger.error("%s", self.fatal)
            if self._on_fatal is not None:
                self._on_fatal()
            return "fatal"
        if status == 400:
            self._count(sent=len(batch), rejected=len(batch))
            logger.error("ingest refused a whole batch of %d records: %s", len(batch), _detail(payload)[:500])
            return "done"
        if status == 413 and len(batch) > 1:
            # Too big for the server's limits: send it in halves instead.
            half = len(batch) // 2
            with self._lock:
                self._queue.extendleft(reversed(batch[half:]))
                self._inflight = batch[:half]
            self.max_batch = max(1, half)
            return 0.0
        self._count(failures=1)
        self._failing_since += 1
        now = time.monotonic()
        # One line for the first failure, then one every 10 s at most: the counters have the rest.
        if self._failing_since == 1 or now - self._last_warning >= 10.0:
            self._last_warning = now
            reason = f"HTTP {status}" if status else "no answer"
            logger.warning(
                "POST %s failed (%s: %s; %d in a row); keeping %d records queued and retrying",
                self.endpoint,
                reason,
                _detail(payload)[:200],
                self._failing_since,
                self.stats.pending,
            )
        if retry_after and retry_after.isdigit():
            return float(min(int(retry_after), self.backoff_s[1]))
        return None

    def _urllib_post(self, body: bytes) -> tuple[int, bytes, str | None]:
        request = urllib.request.Request(  # noqa: S310  (the scheme is checked to be http(s) in __init__)
            self.endpoint,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "Authorization": f"Bearer {self._token}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return int(response.status), response.read(), None
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read(), exc.headers.get("Retry-After")
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(getattr(exc, "reason", exc)).encode(), None


def _json(payload: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _detail(payload: bytes) -> str:
    answer = _json(payload)
    if "detail" in answer:
        return str(answer["detail"])
    return payload.decode("utf-8", "replace")
