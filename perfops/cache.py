"""The Redis cache, as a cache: while Redis is down, restarting or slow, reads miss and writes are dropped.

perfops keeps nothing in the cache that is not also in PostgreSQL (rollup reads, baselines, forecasts,
the active profiling windows), so an outage should cost queries, never a 500 on ingest or a page. Django's
RedisCache raises redis' errors to the caller; this one logs them (once a minute, not once a call) and
answers as a cache that holds nothing. Short socket timeouts keep a hung Redis from holding a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds to connect and to wait for an answer; a healthy Redis on the same network answers in milliseconds.
TIMEOUT_S = 0.5
LOG_EVERY_S = 60.0


class ResilientRedisCache(RedisCache):
    """RedisCache whose errors are misses (get), no-ops (set, delete) and logged warnings."""

    _last_logged = 0.0

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        options = {"socket_connect_timeout": TIMEOUT_S, "socket_timeout": TIMEOUT_S, **params.get("OPTIONS", {})}
        super().__init__(server, {**params, "OPTIONS": options})

    def _or(self, fallback: T, call: Callable[[], T]) -> T:
        try:
            return call()
        except RedisError as exc:
            now = time.monotonic()
            if now - ResilientRedisCache._last_logged >= LOG_EVERY_S:
                ResilientRedisCache._last_logged = now
                log.warning("cache unavailable, reading the database instead: %s", exc)
            return fallback

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self._or(default, lambda: super(ResilientRedisCache, self).get(key, default, version))

    def get_many(self, keys: Any, version: Any = None) -> Any:
        return self._or({}, lambda: super(ResilientRedisCache, self).get_many(keys, version))

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> None:
        self._or(None, lambda: super(ResilientRedisCache, self).set(key, value, timeout, version))

    def set_many(self, data: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> Any:
        return self._or(list(data), lambda: super(ResilientRedisCache, self).set_many(data, timeout, version))

    def delete(self, key: Any, version: Any = None) -> bool:
        return self._or(False, lambda: super(ResilientRedisCache, self).delete(key, version))
