"""The web stack's backend: a FastAPI app (served by uvicorn) over PostgreSQL
and Redis, run by `supervisor up` (examples/web-stack/stack.yaml).

- `GET /items`, `POST /items {"name": ...}`: rows of the `items` table in
  PostgreSQL; the list is cached in Redis for 5 s (a cache that is down is
  skipped, never an error).
- `GET /health`: the database and the cache, each with its circuit breaker;
  200 `{"status": "ok"}` or 503 `{"status": "degraded"}` naming what is down.
- `GET /metrics`: Prometheus text format.

Every call to PostgreSQL and Redis goes through the SDK's circuit breakers
(`agent.breakers`), named after the agents (`postgres`, `redis`); a monitor
thread checks both every 0.3 s so the breakers follow the servers even
without traffic, and the SDK's heartbeats carry their state to the
supervisor, whose `status` then shows this agent degraded with the cause.

Where things are comes from the supervisor: `AGENT_PORT` (this agent's
`port`), `POSTGRES_ENDPOINT` and `REDIS_ENDPOINT` (`tcp://host:port` of the
dependencies).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, Optional
from urllib.parse import urlparse

import psycopg
import redis
import uvicorn
from redis.backoff import NoBackoff
from redis.retry import Retry
from fastapi import FastAPI, Response
from pydantic import BaseModel

from supervisor_sdk import Agent, BreakerConfig, CircuitOpenError, PoolConfig, SocketPool

CHECK_INTERVAL = 0.3
CACHE_KEY = "items"
CACHE_SECONDS = 5


def host_port(variable: str) -> tuple[str, int]:
    endpoint = urlparse(os.environ[variable])
    return endpoint.hostname or "127.0.0.1", int(endpoint.port or 0)


# Two failed checks within 10 s open a breaker; a trial after 2 s.
agent = Agent.from_env_or_standalone(
    "backend",
    handle_signals=False,  # uvicorn owns SIGTERM and shuts down gracefully
    pool=SocketPool(PoolConfig(breaker=BreakerConfig(failure_threshold=2, window=10.0, recovery_timeout=2.0))),
)
pg_host, pg_port = host_port("POSTGRES_ENDPOINT")
redis_host, redis_port = host_port("REDIS_ENDPOINT")
# No retries of its own: the breaker decides when to try again.
cache = redis.Redis(
    host=redis_host, port=redis_port, socket_timeout=1, socket_connect_timeout=1,
    retry=Retry(NoBackoff(), 0),
)


class Database:
    """One connection, opened again after a failure."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: Optional[psycopg.Connection] = None

    def run(self, sql: str, parameters: tuple = ()) -> list:
        with self._lock:
            try:
                if self._connection is None or self._connection.closed:
                    self._connection = psycopg.connect(
                        host=pg_host, port=pg_port, user="postgres", dbname="postgres",
                        connect_timeout=2, autocommit=True,
                    )
                cursor = self._connection.execute(sql, parameters)
                return cursor.fetchall() if cursor.description else []
            except Exception:
                if self._connection is not None:
                    self._connection.close()
                self._connection = None
                raise


database = Database()
requests_total: Dict[str, int] = {}
checks: Dict[str, Dict[str, Any]] = {
    name: {"ok": False, "error": "not checked yet", "latency_ms": None} for name in ("postgres", "redis")
}
checks_lock = threading.Lock()


def check(name: str, call) -> None:
    started = time.monotonic()
    try:
        agent.breakers.call(name, call)
        result = {"ok": True, "error": None}
    except CircuitOpenError as error:
        result = {"ok": False, "error": f"breaker open (next try in {error.retry_in:.1f}s)"}
    except Exception as error:  # the driver's own errors: refused, timeout, ...
        result = {"ok": False, "error": f"{type(error).__name__}: {error}".strip()}
    result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    with checks_lock:
        checks[name] = result


def monitor() -> None:
    while True:
        check("postgres", lambda: database.run("SELECT 1"))
        check("redis", cache.ping)
        time.sleep(CHECK_INTERVAL)


app = FastAPI(title="web-stack backend")


@app.middleware("http")
async def count_requests(request, call_next):
    requests_total[request.url.path] = requests_total.get(request.url.path, 0) + 1
    return await call_next(request)


@app.get("/health")
def health(response: Response) -> Dict[str, Any]:
    with checks_lock:
        snapshot = {name: dict(result) for name, result in checks.items()}
    for name, result in snapshot.items():
        result["breaker"] = agent.breakers.state(name)
    healthy = all(result["ok"] for result in snapshot.values())
    response.status_code = 200 if healthy else 503
    return {
        "status": "ok" if healthy else "degraded",
        "database": snapshot["postgres"],
        "cache": snapshot["redis"],
    }


class NewItem(BaseModel):
    name: str


@app.get("/items")
def list_items() -> Dict[str, Any]:
    try:
        cached = agent.breakers.call("redis", cache.get, CACHE_KEY)
        if cached is not None:
            return {"items": cached.decode().split("\n") if cached else [], "cached": True}
    except Exception:
        pass  # the cache is an optimisation: without it, ask the database
    rows = agent.breakers.call("postgres", database.run, "SELECT name FROM items ORDER BY id")
    names = [row[0] for row in rows]
    try:
        agent.breakers.call("redis", cache.set, CACHE_KEY, "\n".join(names), ex=CACHE_SECONDS)
    except Exception:
        pass
    return {"items": names, "cached": False}


@app.post("/items", status_code=201)
def add_item(item: NewItem) -> Dict[str, Any]:
    agent.breakers.call("postgres", database.run, "INSERT INTO items (name) VALUES (%s)", (item.name,))
    try:
        agent.breakers.call("redis", cache.delete, CACHE_KEY)
    except Exception:
        pass
    return {"added": item.name}


@app.get("/metrics")
def metrics() -> Response:
    lines = [
        "# HELP webstack_backend_requests_total HTTP requests served, by path.",
        "# TYPE webstack_backend_requests_total counter",
    ]
    for path, count in sorted(requests_total.items()):
        lines.append(f'webstack_backend_requests_total{{path="{path}"}} {count}')
    lines += [
        "# HELP webstack_backend_dependency_up 1 when the last check of the dependency succeeded.",
        "# TYPE webstack_backend_dependency_up gauge",
    ]
    with checks_lock:
        snapshot = {name: dict(result) for name, result in checks.items()}
    for name, result in snapshot.items():
        lines.append(f'webstack_backend_dependency_up{{dependency="{name}"}} {int(result["ok"])}')
    lines += [
        "# HELP webstack_backend_check_seconds Duration of the last check of the dependency.",
        "# TYPE webstack_backend_check_seconds gauge",
    ]
    for name, result in snapshot.items():
        lines.append(
            f'webstack_backend_check_seconds{{dependency="{name}"}} {(result["latency_ms"] or 0) / 1000}'
        )
    lines += [
        "# HELP webstack_backend_breaker_state 1 for the current state of each circuit breaker.",
        "# TYPE webstack_backend_breaker_state gauge",
    ]
    for report in agent.breakers.reports():
        for state in ("closed", "open", "half_open"):
            value = int(report["state"] == state)
            lines.append(
                f'webstack_backend_breaker_state{{target="{report["target"]}",state="{state}"}} {value}'
            )
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8")


def main() -> None:
    database.run("CREATE TABLE IF NOT EXISTS items (id serial PRIMARY KEY, name text NOT NULL)")
    threading.Thread(target=monitor, name="dependency-monitor", daemon=True).start()
    port = int(os.environ.get("AGENT_PORT", "58000"))
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    finally:
        agent.close()


if __name__ == "__main__":
    main()
