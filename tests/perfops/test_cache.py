"""The Redis cache degrades to a cache that holds nothing while Redis is away: pages and ingest keep working."""

from __future__ import annotations

import socket
import time

import pytest
from redis import Redis
from redis.exceptions import RedisError

from perfops.cache import ResilientRedisCache

LIVE = "redis://127.0.0.1:6379/14"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_redis_reads_as_misses_and_drops_writes_quickly(caplog, monkeypatch):
    monkeypatch.setattr(ResilientRedisCache, "_last_logged", 0.0)
    cache = ResilientRedisCache(f"redis://127.0.0.1:{closed_port()}/0", {})
    started = time.monotonic()
    cache.set("k", "v")
    cache.set_many({"a": 1, "b": 2}, timeout=30)
    assert cache.get("k") is None
    assert cache.get("k", "fallback") == "fallback"
    assert cache.get_many(["a", "b"]) == {}
    assert cache.delete("k") is False
    assert time.monotonic() - started < 5, "each call is bounded by the socket timeouts"
    assert "cache unavailable" in caplog.text


def test_a_running_redis_is_used_as_usual_with_the_callers_timeouts():
    try:
        Redis.from_url(LIVE, socket_connect_timeout=0.5).ping()
    except RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379 (the embedded default runs without one)")
    cache = ResilientRedisCache(LIVE, {"KEY_PREFIX": "perfops-test-cache"})
    cache.set("probe", "1", timeout=5)
    cache.set("forever", "x", timeout=None)
    cache.set("default", "y")
    raw = Redis.from_url(LIVE)
    try:
        assert cache.get("probe") == "1"
        assert cache.get_many(["probe", "missing"]) == {"probe": "1"}
        assert 0 < raw.ttl(cache.make_and_validate_key("probe")) <= 5
        assert raw.ttl(cache.make_and_validate_key("forever")) == -1, "timeout=None keeps the key"
        assert raw.ttl(cache.make_and_validate_key("default")) == 300, "no timeout takes the default"
        assert cache.delete("probe") is True
        assert cache.get("probe") is None
    finally:
        cache.delete("forever")
        cache.delete("default")
