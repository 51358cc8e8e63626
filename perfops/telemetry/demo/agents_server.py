"""Simulated agents that answer HTTP on 127.0.0.1: the targets of load tests.

`POST /invoke` answers after the agent's simulated latency with {"trace_id", "latency_ms",
"status"} (HTTP 500 for an error, 429 when rate limited or over capacity, 504 on a timeout), and
reports the request as a trace through the same sender as the live traffic. `GET /health`
answers 200. Each agent serves at most `max_concurrency` requests at once; the busier it is, the
slower it answers, and beyond that it refuses with 429, as a real service does under load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import orjson

from perfops.telemetry.demo.fleet import PRODUCTION
from perfops.telemetry.demo.render import Renderer
from perfops.telemetry.demo.traffic import TrafficModel

logger = logging.getLogger("perfops.simulate")

HOST = "127.0.0.1"
MAX_BODY_BYTES = 1024 * 1024
_HTTP_STATUS = {"ok": 200, "timeout": 504}
_ERROR_STATUS = {"rate_limited": 429}

Sink = Callable[[list[dict[str, Any]]], None]


class SimulatedAgent:
    """One agent of the fleet serving requests: draws each request from the traffic model, then sleeps it."""

    def __init__(
        self,
        model: TrafficModel,
        slug: str,
        sink: Sink,
        *,
        seed: int,
        max_concurrency: int = 32,
        latency_scale: float = 1.0,
    ) -> None:
        self.model = model
        self.renderer = Renderer(model)
        self.slug = slug
        self.ae = model.plan.ae(slug, PRODUCTION)
        self.sink = sink
        self.latency_scale = latency_scale
        self.max_concurrency = max_concurrency
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._in_flight = 0
        self.served = 0

    def invoke(self) -> tuple[int, dict[str, Any]]:
        """Serve one request; returns the HTTP status and the JSON answer."""
        started = time.time()
        with self._lock:
            refused = self._in_flight >= self.max_concurrency
            busy = self._in_flight / self.max_concurrency
            if not refused:
                self._in_flight += 1
            cols = self.model.synthesize(self._rng, np.array([self.ae]), np.array([int(started * 1e6)], dtype=np.int64))
        record = self.renderer.records(cols)[0]
        if refused:
            _refuse(record)
        else:
            try:
                # Queueing: a busy agent answers later than its own work takes.
                time.sleep(record["latency_ms"] / 1000 * (1.0 + 2.0 * busy**2) * self.latency_scale)
            finally:
                with self._lock:
                    self._in_flight -= 1
            if self.latency_scale >= 1.0:
                # What the client waited for (never less than the phases the trace reports).
                waited_ms = (time.time() - started) * 1000
                record["latency_ms"] = round(max(record["latency_ms"], waited_ms), 1)
        record["attributes"]["endpoint"] = "/invoke"
        with self._lock:
            self.served += 1
        self.sink([record])
        error_type = record.get("error_type", "")
        code = _HTTP_STATUS.get(record["status"], _ERROR_STATUS.get(error_type, 500))
        answer = {"trace_id": record["trace_id"], "latency_ms": record["latency_ms"], "status": record["status"]}
        if error_type:
            answer["error_type"] = error_type
        return code, answer


def _refuse(record: dict[str, Any]) -> None:
    """Turn a drawn request into one refused at the door: the agent is over capacity."""
    record.update(
        status="error",
        error_type="rate_limited",
        latency_ms=1.0,
        phases={"auth": 0.3},
        dependencies=[],
        cache_hit=False,
    )
    if "input_tokens" in record:
        record.update(input_tokens=0, output_tokens=0)


class _Handler(BaseHTTPRequestHandler):
    server: AgentServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/health":
            self._answer(200, {"status": "ok", "agent": self.server.agent.slug})
        else:
            self._answer(404, {"detail": "Not found: use POST /invoke or GET /health."})

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/invoke":
            self._answer(404, {"detail": "Not found: use POST /invoke or GET /health."})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._answer(400, {"detail": "Content-Length is not a number."})
            return
        if length > MAX_BODY_BYTES:
            self._answer(413, {"detail": f"The body is limited to {MAX_BODY_BYTES} bytes."})
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        if body.strip():
            try:
                orjson.loads(body)
            except orjson.JSONDecodeError:
                self._answer(400, {"detail": "The body must be JSON (or empty)."})
                return
        code, answer = self.server.agent.invoke()
        self._answer(code, answer, retry_after=code == 429)

    def _answer(self, code: int, payload: dict[str, Any], *, retry_after: bool = False) -> None:
        body = orjson.dumps(payload)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if retry_after:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.server.agent.slug, format % args)


class AgentServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer bound to 127.0.0.1 for one simulated agent."""

    daemon_threads = True

    def __init__(self, agent: SimulatedAgent, port: int) -> None:
        self.agent = agent
        super().__init__((HOST, port), _Handler)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"


@dataclass
class RunningAgents:
    """Started agent servers and their threads."""

    servers: list[AgentServer]
    threads: list[threading.Thread]

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join(5)

    @property
    def served(self) -> int:
        return sum(server.agent.served for server in self.servers)


def start_agents(
    model: TrafficModel, slugs: list[str], first_port: int, sink: Sink, *, seed: int, latency_scale: float = 1.0
) -> RunningAgents:
    """Serve each agent on 127.0.0.1, from `first_port` upward (0: any free ports)."""
    servers: list[AgentServer] = []
    threads: list[threading.Thread] = []
    try:
        for i, slug in enumerate(slugs):
            agent = SimulatedAgent(model, slug, sink, seed=seed + 100 + i, latency_scale=latency_scale)
            server = AgentServer(agent, first_port + i if first_port else 0)
            servers.append(server)
            # A short poll interval makes stop() (server.shutdown) quick.
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"agent-{slug}", daemon=True
            )
            thread.start()
            threads.append(thread)
    except OSError:
        RunningAgents(servers, threads).stop()
        raise
    return RunningAgents(servers, threads)
