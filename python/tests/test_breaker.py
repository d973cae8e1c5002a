"""Issue 22: the Python SDK's circuit breakers.

- `SocketPool.request` against a real REP server that stops and comes back:
  the breaker opens after the failures, refuses at once while open,
  half-opens after the recovery timeout (a failed trial opens it again) and
  closes on the first successful trial.
- `Breakers.guard` around a call that is not a pool request.
- Under a real `supervisor up`: a Python client agent calls a Python server
  agent through its pool; the server is killed with SIGKILL and comes back
  after its 4 s restart delay. The client's heartbeats carry its breaker, so
  `supervisor status --json` shows it open and the client degraded naming
  the server, then closed and healthy again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest
import zmq

from conftest import wait_until
from supervisor_sdk import (
    BreakerConfig,
    Breakers,
    CircuitOpenError,
    PoolConfig,
    RequestTimeoutError,
    SocketPool,
)

BOUND = 60.0


class EchoServer:
    """A REP echo server on `endpoint` in a thread; `stop()` closes its socket."""

    def __init__(self, endpoint: str) -> None:
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(endpoint,), daemon=True)
        self._thread.start()
        assert self._bound.wait(10), "the echo server did not bind"

    def _run(self, endpoint: str) -> None:
        socket = zmq.Context.instance().socket(zmq.REP)
        socket.setsockopt(zmq.LINGER, 0)
        socket.bind(endpoint)
        self._bound.set()
        try:
            while not self._stop.is_set():
                if socket.poll(20):
                    socket.send(socket.recv())
        finally:
            socket.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_breaker_opens_half_opens_and_closes_against_a_server_that_stops_and_comes_back(tmp_path):
    endpoint = f"ipc://{tmp_path}/echo.sock"
    recovery = 0.6
    pool = SocketPool(PoolConfig(breaker=BreakerConfig(failure_threshold=2, window=30.0, recovery_timeout=recovery)))
    pool.name_endpoint(endpoint, "echo")
    server = EchoServer(endpoint)
    assert pool.request(endpoint, b"one", timeout=0.3, retries=0) == b"one"
    assert pool.breakers.state("echo") == "closed"

    server.stop()
    for _ in range(2):
        with pytest.raises(RequestTimeoutError):
            pool.request(endpoint, b"two", timeout=0.3, retries=0)
    assert pool.breakers.state("echo") == "open"
    [report] = pool.breakers.reports()
    assert (report["target"], report["state"]) == ("echo", "open")

    started = time.monotonic()
    with pytest.raises(CircuitOpenError) as refused:
        pool.request(endpoint, b"three", timeout=0.3, retries=0)
    assert refused.value.target == "echo"
    assert time.monotonic() - started < 0.3, "an open breaker must not wait"

    time.sleep(recovery + 0.05)
    assert pool.breakers.state("echo") == "half_open"
    with pytest.raises(RequestTimeoutError):  # the trial is a real call, and fails
        pool.request(endpoint, b"trial", timeout=0.3, retries=0)
    assert pool.breakers.state("echo") == "open"

    server = EchoServer(endpoint)
    try:
        with pytest.raises(CircuitOpenError):
            pool.request(endpoint, b"early", timeout=0.3, retries=0)
        time.sleep(recovery + 0.05)
        assert pool.breakers.state("echo") == "half_open"
        assert pool.request(endpoint, b"back", timeout=5.0, retries=0) == b"back"
        assert pool.breakers.state("echo") == "closed"
        assert pool.request(endpoint, b"again", timeout=5.0, retries=0) == b"again"
    finally:
        server.stop()


def test_guard_counts_exceptions_and_refuses_while_open():
    now = [0.0]
    breakers = Breakers(BreakerConfig(failure_threshold=2, window=10.0, recovery_timeout=5.0), clock=lambda: now[0])
    for _ in range(2):
        with pytest.raises(ConnectionError):
            with breakers.guard("postgres"):
                raise ConnectionError("refused")
    ran = []
    with pytest.raises(CircuitOpenError) as refused:
        breakers.call("postgres", lambda: ran.append(1))
    assert ran == [] and refused.value.retry_in == pytest.approx(5.0)
    now[0] = 5.0
    assert breakers.reports() == [{"target": "postgres", "state": "half_open", "for_ms": 0, "failures": 0}]
    assert breakers.call("postgres", lambda: "rows") == "rows"
    assert breakers.state("postgres") == "closed"


SERVER = """
import os, zmq
from supervisor_sdk import Agent
agent = Agent.from_env()
socket = zmq.Context.instance().socket(zmq.REP)
socket.bind(f"tcp://127.0.0.1:{os.environ['AGENT_PORT']}")
agent.ready()
while not agent.shutdown_requested.is_set():
    if socket.poll(50):
        socket.send(socket.recv())
agent.close()
"""

CLIENT = """
import time
from supervisor_sdk import Agent, BreakerConfig, CircuitOpenError, PoolConfig, RequestTimeoutError, SocketPool
agent = Agent.from_env(pool=SocketPool(PoolConfig(breaker=BreakerConfig(failure_threshold=2, recovery_timeout=1.0))))
agent.ready()
while not agent.shutdown_requested.is_set():
    endpoint = agent.resolve("server").endpoint
    try:
        agent.pool.request(endpoint, b"ping", timeout=0.2, retries=0)
    except (RequestTimeoutError, CircuitOpenError):
        pass
    agent.wait_for_shutdown(0.1)
agent.close()
"""


def test_status_shows_the_python_agents_breaker_and_its_degradation(up, supervisor_bin, tmp_path):
    (tmp_path / "server.py").write_text(SERVER)
    (tmp_path / "client.py").write_text(CLIENT)
    with socket_port() as port:
        pass
    running = up(
        f"""
version: 1
agents:
  server:
    command: ["@PYTHON@", "server.py"]
    port: {port}
    readiness: sdk
    restart: {{ policy: always, backoff: {{ initial: 4s, max: 4s }} }}
  client:
    command: ["@PYTHON@", "client.py"]
    dependencies: [server]
    readiness: sdk
    heartbeat: {{ interval: 200ms, misses: 10 }}
"""
    )

    def status() -> dict:
        output = subprocess.run(
            [supervisor_bin, "status", "--json", "--run-dir", str(running.run_dir)],
            capture_output=True, text=True, timeout=30,
        )
        return json.loads(output.stdout) if output.returncode == 0 else {"agents": []}

    def agent(view: dict, name: str) -> dict:
        return next((entry for entry in view["agents"] if entry["name"] == name), {})

    def client_breaker(view: dict) -> dict:
        breakers = agent(view, "client").get("breakers") or [{}]
        return breakers[0]

    seen: dict = {}

    def healthy() -> bool:
        seen["view"] = view = status()
        return (
            agent(view, "client").get("health") == "ok"
            and client_breaker(view).get("target") == "server"
            and client_breaker(view).get("state") == "closed"
        )

    wait_until("the client healthy with its breaker to `server` closed", BOUND, healthy)
    server_pid = agent(seen["view"], "server")["pid"]
    os.kill(server_pid, signal.SIGKILL)

    def broken() -> bool:
        seen["view"] = view = status()
        causes = agent(view, "client").get("degraded_by", [])
        return client_breaker(view).get("state") == "open" and any(
            cause["kind"] == "breaker" and cause["message"].startswith("breaker to `server` open for")
            for cause in causes
        )

    wait_until("the client's breaker open and named in its degradation", BOUND, broken)
    assert agent(seen["view"], "client")["health"] == "degraded"
    assert agent(seen["view"], "client")["state"] == "ready"

    wait_until("the client healthy again once the server is back", BOUND, healthy)
    assert agent(seen["view"], "server")["pid"] != server_pid, running.output


class socket_port:
    """A free loopback port (bound, then released for the manifest)."""

    def __enter__(self) -> int:
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        return self._socket.getsockname()[1]

    def __exit__(self, *_exc: object) -> None:
        self._socket.close()
