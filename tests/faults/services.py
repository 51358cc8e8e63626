"""Private PostgreSQL and Redis servers for fault tests: ours to stop, kill and restart.

The shared servers on 5432 and 6379 serve everyone else's tests and are never touched. These run on
free loopback ports with their data in a temporary directory; each can be stopped abruptly (PostgreSQL
with `pg_ctl stop -m immediate`, Redis with SIGKILL) and started again on the same port and data.
PostgreSQL refuses to run as root, so when we are root its commands run as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Start and stop are bounded: a server that does not answer within this is a failure, not a hang.
STARTUP_TIMEOUT_S = 30

# Durability off where it costs time and cannot lose a commit: after an immediate stop the WAL the
# server already wrote is in the OS page cache, which survives the process. synchronous_commit stays on,
# so a commit the server acknowledged is in that WAL (an asynchronous commit could die in shared memory).
_POSTGRES_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
fsync = off
full_page_writes = off
max_connections = 50
shared_buffers = 32MB
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin_dir() -> Path | None:
    """The PostgreSQL server binaries: version 15 if installed, else the newest, else those on PATH."""
    preferred = Path("/usr/lib/postgresql/15/bin")
    candidates = [preferred, *sorted(Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin"))[::-1]]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def missing_binaries() -> str | None:
    """Why these servers cannot run here, or None when they can."""
    if postgres_bin_dir() is None:
        return "the PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser, so PostgreSQL cannot be started as another user"
    return None


def _wait_for(probe: str, ready: Callable[[], bool], deadline_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{probe} did not become ready within {deadline_s:.0f} s")


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free loopback port, trust authentication, user `postgres`."""

    def __init__(self) -> None:
        folder = postgres_bin_dir()
        if folder is None:
            raise RuntimeError("PostgreSQL binaries are missing")
        self.bin = folder
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="perfops-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, user="postgres", group="postgres")

    def _run(self, *args: str, timeout: float = STARTUP_TIMEOUT_S + 10) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode:
            raise RuntimeError(
                f"{' '.join(args[:1])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{self.tail()}"
            )

    def init(self) -> None:
        """initdb, then the settings above (listen on loopback only, this port, no fsync)."""
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(_POSTGRES_CONF.format(port=self.port))

    def start(self) -> None:
        """Start the server and return once it accepts connections (after crash recovery, if any)."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(STARTUP_TIMEOUT_S), "start")

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; `immediate` kills every backend at once, as a crash would."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(STARTUP_TIMEOUT_S), "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def tail(self, lines: int = 30) -> str:
        """The end of the server log, for failure messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def destroy(self) -> None:
        """Stop the server if it runs and delete its files."""
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    """A redis-server on a free loopback port, keeping nothing on disk."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="perfops-faults-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start redis-server and return once it answers PING."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("redis-server is already running")
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--dir", str(self.root), "--logfile", str(self.root / "redis.log"), "--daemonize", "no"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = self.process
        _wait_for("redis-server", lambda: process.poll() is not None or _redis_pings(self.port))
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")

    def kill(self) -> None:
        """SIGKILL the server: it drops every connection, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STARTUP_TIMEOUT_S)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def destroy(self) -> None:
        try:
            self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
