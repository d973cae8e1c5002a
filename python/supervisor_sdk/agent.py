"""The public agent API: reading the injected environment, READY, progress
payloads, error reports (also as a `logging.Handler`), RESOLVE, the shutdown
signal and the agent's `SocketPool`. Mirrors the Rust `supervisor::sdk`.

Owns the `Agent` object and the process-wide SIGTERM/SIGINT handler. The
socket and the wire format belong to `_link.py`; pooled client sockets to
`pool.py`.
"""

from __future__ import annotations

import atexit
import datetime
import enum
import json
import logging
import os
import re
import signal
import threading
import time
import traceback
import weakref
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from ._link import Link, LinkStats
from .errors import (
    InvalidVariableError,
    NotFoundError,
    NotSupervisedError,
    RejectedError,
    SupervisorTimeoutError,
)
from .breaker import Breakers
from .pool import SocketPool

__version__ = "0.1.0"

#: The variable holding the supervisor's agent endpoint.
ENDPOINT_VARIABLE = "SUPERVISOR_ENDPOINT"
#: The variable holding this agent's name.
NAME_VARIABLE = "AGENT_NAME"
#: The variable holding this agent's secret token.
TOKEN_VARIABLE = "AGENT_TOKEN"
#: The variable holding the heartbeat interval in milliseconds (default 1000).
HEARTBEAT_VARIABLE = "AGENT_HEARTBEAT_INTERVAL_MS"
#: The variable holding `{"dependency": "endpoint", ...}` as JSON.
DEPENDENCIES_VARIABLE = "AGENT_DEPENDENCIES"

#: How long calls that wait for the supervisor (READY, RESOLVE) wait, in seconds.
DEFAULT_CALL_TIMEOUT = 5.0

log = logging.getLogger("supervisor_sdk")


class Severity(str, enum.Enum):
    """Severity of an error report (docs/protocol.md, ERROR)."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"
    FATAL = "fatal"

    @classmethod
    def from_logging(cls, level: int) -> "Severity":
        """The severity of a `logging` level (CRITICAL maps to `critical`)."""
        if level >= logging.CRITICAL:
            return cls.CRITICAL
        if level >= logging.ERROR:
            return cls.ERROR
        if level >= logging.WARNING:
            return cls.WARNING
        if level >= logging.INFO:
            return cls.INFO
        return cls.DEBUG


@dataclass(frozen=True)
class Resolved:
    """Where another agent is, as `Agent.resolve` reports it."""

    name: str
    #: Where to connect; None when it has no endpoint.
    endpoint: Optional[str]
    #: `pending`, `starting`, `ready`, `backing_off`, `stopping`, `stopped`,
    #: `failed` or `unknown` (always `unknown` standalone).
    state: str


_STATES = {"pending", "starting", "ready", "backing_off", "stopping", "stopped", "failed", "unknown"}


@dataclass(frozen=True)
class AgentSettings:
    """Everything `Agent.connect` needs; `AgentSettings.from_env` fills it."""

    name: str
    endpoint: str
    token: str
    #: Seconds between heartbeats.
    heartbeat_interval: float = 1.0
    #: How long READY and RESOLVE wait for the supervisor, in seconds.
    call_timeout: float = DEFAULT_CALL_TIMEOUT

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "AgentSettings":
        """Reads `SUPERVISOR_ENDPOINT`, `AGENT_NAME`, `AGENT_TOKEN` and
        `AGENT_HEARTBEAT_INTERVAL_MS`; raises `NotSupervisedError` naming the
        first missing one."""
        environ = os.environ if environ is None else environ

        def required(variable: str) -> str:
            value = environ.get(variable, "")
            if not value:
                raise NotSupervisedError(variable)
            return value

        endpoint = required(ENDPOINT_VARIABLE)
        name = required(NAME_VARIABLE)
        token = required(TOKEN_VARIABLE)
        interval = 1.0
        raw = environ.get(HEARTBEAT_VARIABLE)
        if raw is not None:
            try:
                millis = int(raw.strip())
            except ValueError:
                raise InvalidVariableError(
                    HEARTBEAT_VARIABLE, raw, "expected milliseconds as a whole number"
                ) from None
            if millis < 1:
                raise InvalidVariableError(HEARTBEAT_VARIABLE, raw, "must be at least 1")
            interval = millis / 1000
        return cls(name=name, endpoint=endpoint, token=token, heartbeat_interval=interval)


def now_unix_millis() -> int:
    """Milliseconds since the Unix epoch, as `last_progress_ms` wants."""
    return time.time_ns() // 1_000_000


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with milliseconds, e.g. `2026-01-01T12:00:00.123Z`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----- shutdown -------------------------------------------------------------

#: Set by SIGTERM/SIGINT (once the handlers are installed) or by `Agent.request_shutdown`.
shutdown_requested = threading.Event()
_handlers_installed = False
_handlers_lock = threading.Lock()


def install_signal_handlers() -> bool:
    """Makes SIGTERM and SIGINT set `shutdown_requested` instead of killing
    the process (SIGINT no longer raises `KeyboardInterrupt`). Idempotent.
    Python only allows this from the main thread: elsewhere it logs and
    returns False, and `shutdown_requested` then only sees explicit requests.
    """
    global _handlers_installed
    with _handlers_lock:
        if _handlers_installed:
            return True
        if threading.current_thread() is not threading.main_thread():
            log.warning("not on the main thread: SIGTERM will not set shutdown_requested")
            return False

        def on_signal(number: int, _frame: object) -> None:
            shutdown_requested.set()

        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, on_signal)
        _handlers_installed = True
        return True


# ----- the agent ------------------------------------------------------------

_live_agents: "weakref.WeakSet[Agent]" = weakref.WeakSet()


@atexit.register
def _close_live_agents() -> None:
    # Flush queued errors of agents nobody closed (the link thread is a daemon).
    for agent in list(_live_agents):
        agent.close()


class Agent:
    """This agent's connection to its supervisor.

    Supervised (`Agent.from_env`, `Agent.connect`): a background thread says
    HELLO, sends a heartbeat every interval with the latest `progress`
    payload, and carries READY, errors and RESOLVE. Standalone
    (`Agent.standalone`): the same calls log and succeed. `close()` (or the
    `with` block, or interpreter exit) flushes queued errors and stops the
    thread.

    Example::

        from supervisor_sdk import Agent

        with Agent.from_env_or_standalone("worker") as agent:
            ...  # bind sockets, load models
            agent.ready()
            while not agent.shutdown_requested.is_set():
                ...  # one unit of work
                agent.progress(queue_depth=3)
    """

    def __init__(
        self,
        name: str,
        link: Optional[Link],
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        handle_signals: bool = True,
        pool: Optional[SocketPool] = None,
    ) -> None:
        """Use `from_env`, `connect` or `standalone` instead."""
        self.name = name
        self._link = link
        self.call_timeout = call_timeout
        #: The agent's socket pool, for calling other agents; its breakers
        #: ride on every heartbeat.
        self.pool = pool or SocketPool()
        if link is not None:
            link.breakers = self.pool.breakers
            # A request through the pool that goes unanswered resolves its
            # target again: that starts an agent stopped as idle (the reply
            # is not awaited; the pool's retries reach it once it listens).
            self.pool.on_unanswered(lambda target: _post_resolve(link, target))
        #: Set on SIGTERM/SIGINT or `request_shutdown()`; wait on it or poll it.
        self.shutdown_requested = shutdown_requested
        if handle_signals:
            install_signal_handlers()
        _live_agents.add(self)

    @classmethod
    def from_env(cls, handle_signals: bool = True, pool: Optional[SocketPool] = None) -> "Agent":
        """Connects using the variables the supervisor injects.

        Raises `NotSupervisedError` naming the missing variable when the
        agent was not started by `supervisor up`.

        >>> agent = Agent.from_env()  # doctest: +SKIP
        >>> agent.ready()             # doctest: +SKIP
        """
        return cls.connect(AgentSettings.from_env(), handle_signals=handle_signals, pool=pool)

    @classmethod
    def from_env_or_standalone(
        cls, default_name: str, handle_signals: bool = True, pool: Optional[SocketPool] = None
    ) -> "Agent":
        """`from_env` when supervised, else `standalone` under `AGENT_NAME` or
        `default_name` (with a log line saying so). Raises only on a broken
        environment (`InvalidVariableError`), never on a missing one.

        >>> Agent.from_env_or_standalone("demo", handle_signals=False).name  # doctest: +SKIP
        'demo'
        """
        try:
            return cls.from_env(handle_signals=handle_signals, pool=pool)
        except NotSupervisedError as error:
            log.info("running standalone: %s", error)
            return cls.standalone(os.environ.get(NAME_VARIABLE) or default_name, handle_signals, pool)

    @classmethod
    def connect(
        cls, settings: AgentSettings, handle_signals: bool = True, pool: Optional[SocketPool] = None
    ) -> "Agent":
        """Connects with explicit settings (tests, or agents configured
        otherwise). `pool`: a `SocketPool` of your own configuration (e.g.
        other breaker thresholds, `PoolConfig(breaker=BreakerConfig(...))`)."""
        link = Link(
            endpoint=settings.endpoint,
            agent=settings.name,
            token=settings.token,
            heartbeat_interval=settings.heartbeat_interval,
            sdk=f"python/{__version__}",
        )
        return cls(settings.name, link, settings.call_timeout, handle_signals, pool)

    @classmethod
    def standalone(cls, name: str, handle_signals: bool = True, pool: Optional[SocketPool] = None) -> "Agent":
        """An agent run by hand: no supervisor, every call logs and succeeds,
        `resolve` reads `<NAME>_ENDPOINT` / `AGENT_DEPENDENCIES`.

        >>> agent = Agent.standalone("demo", handle_signals=False)
        >>> agent.is_supervised
        False
        >>> agent.ready()
        """
        return cls(name, None, handle_signals=handle_signals, pool=pool)

    # ----- lifecycle ----------------------------------------------------------

    @property
    def is_supervised(self) -> bool:
        """True when connected to a supervisor."""
        return self._link is not None

    def close(self) -> None:
        """Sends what is queued (errors are never dropped) and stops the
        connection thread. Idempotent; also run at interpreter exit."""
        if self._link is not None:
            self._link.stop()
        _live_agents.discard(self)

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = f"supervised via {self._link.endpoint}" if self._link else "standalone"
        return f"Agent({self.name!r}, {mode})"

    # ----- the protocol -------------------------------------------------------

    def ready(self, endpoint: Optional[str] = None) -> None:
        """Tells the supervisor this agent is ready (for `readiness: sdk`) and
        waits for the acknowledgement, retrying every 20 ms while the
        supervisor answers `busy`, for up to `call_timeout` seconds.

        `endpoint` (e.g. `tcp://127.0.0.1:41234` after binding port 0) tells
        the supervisor where this agent serves: `resolve` in other agents
        then answers it instead of the manifest's `port`.

        Raises `RejectedError` (e.g. bad token) or `SupervisorTimeoutError`.
        """
        if self._link is None:
            log.info("standalone: %s ready%s", self.name, f" at {endpoint}" if endpoint else "")
            return
        message: Dict[str, Any] = {"type": "ready"}
        if endpoint:
            message["endpoint"] = endpoint
        deadline = time.monotonic() + self.call_timeout
        while True:
            remaining = max(0.001, deadline - time.monotonic())
            try:
                self._link.call(message, remaining)
                return
            except RejectedError as error:
                if error.reason != "busy" or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def progress(
        self,
        queue_depth: Optional[int] = None,
        in_flight: Optional[int] = None,
        last_progress_ms: Optional[int] = None,
        **custom: Any,
    ) -> None:
        """Attaches a payload to every following heartbeat. Keyword arguments
        other than the three standard fields go to `custom` (shown in
        status). `last_progress_ms` defaults to now: calling `progress` is
        what counts as progress for `heartbeat.progress_timeout`, so call it
        when real work completes, not on a timer.

        >>> Agent.standalone("demo", handle_signals=False).progress(queue_depth=12, in_flight=2, model="v3")
        """
        payload: Dict[str, Any] = {
            "last_progress_ms": now_unix_millis() if last_progress_ms is None else int(last_progress_ms)
        }
        if queue_depth is not None:
            payload["queue_depth"] = int(queue_depth)
        if in_flight is not None:
            payload["in_flight"] = int(in_flight)
        if custom:
            payload["custom"] = custom
        if self._link is None:
            log.debug("standalone: %s progress %s", self.name, payload)
        else:
            self._link.set_payload(payload)

    def busy(self, in_flight: int) -> None:
        """Reports `in_flight` pieces of work being processed now (and none
        queued), as a progress payload (replacing the previous one, like
        `progress`). With `idle_stop` in the manifest, an agent whose
        heartbeats say `busy(0)` (see `idle`) for that long, without new
        progress, is stopped and started again on demand (docs/protocol.md,
        *Idle*).

        >>> Agent.standalone("demo", handle_signals=False).busy(3)
        """
        self.progress(in_flight=in_flight)

    def idle(self) -> None:
        """Reports no work: `busy(0)`. Call it when the last piece of work
        is done; the idle clock of `idle_stop` starts then.

        >>> Agent.standalone("demo", handle_signals=False).idle()
        """
        self.busy(0)

    def report_error(
        self,
        message: str,
        severity: "Severity | str" = Severity.ERROR,
        kind: Optional[str] = None,
        context: Optional[Mapping[str, Any]] = None,
        correlation_id: Optional[str] = None,
    ) -> bool:
        """Queues a structured error for the supervisor's error bus (it lands
        in `<run-dir>/errors.jsonl`) and returns at once. Errors of one agent
        are sent in order with a blocking send and flushed by `close()`.
        Returns False only if the connection thread has stopped.

        `context` values must be JSON-serialisable (others are sent as `str`).

        >>> Agent.standalone("demo", handle_signals=False).report_error(
        ...     "database unreachable", Severity.ERROR, kind="database",
        ...     context={"host": "db-1"}, correlation_id="request-42")
        True
        """
        severity = Severity(severity)
        error: Dict[str, Any] = {
            "severity": severity.value,
            "message": str(message),
            "timestamp": now_rfc3339(),
        }
        if kind:
            error["kind"] = kind
        if context:
            error["context"] = json.loads(json.dumps(dict(context), default=str))
        if correlation_id:
            error["correlation_id"] = correlation_id
        if self._link is None:
            log.warning("standalone: %s %s: %s (%s)", self.name, severity.value, message, kind or "")
            return True
        try:
            self._link.post({"type": "error", "error": error})
            return True
        except Exception:  # StoppedError: closed already
            return False

    def resolve(self, name: str) -> Resolved:
        """Asks the supervisor where agent `name` is and in which state;
        correct after restarts and port changes, so resolve again after a
        failure. Standalone: `<NAME>_ENDPOINT`, else `AGENT_DEPENDENCIES`.

        Raises `NotFoundError` when no such agent is known.
        """
        if self._link is None:
            return self._remember(_resolve_from_env(name))
        reply = self._link.call({"type": "resolve", "name": name}, self.call_timeout)
        if reply.get("found") is not True:
            raise NotFoundError(name)
        state = reply.get("state")
        return self._remember(
            Resolved(
                name=name,
                endpoint=reply.get("endpoint"),
                state=state if state in _STATES else "unknown",
            )
        )

    def resolve_all(self, name: str) -> List[Resolved]:
        """Every instance of agent `name`: for an agent with `replicas`
        (`worker`), `worker-0 ... worker-(N-1)` with their endpoints and
        states, by index; for a plain agent, itself alone (as `resolve`).
        Pick the ready ones to spread requests over them.

        Raises `NotFoundError` when no such agent is known.
        """
        if self._link is None:
            return [self._remember(_resolve_from_env(name))]
        reply = self._link.call({"type": "resolve", "name": name}, self.call_timeout)
        if reply.get("found") is not True:
            raise NotFoundError(name)
        instances = reply.get("instances")
        if instances is None:
            instances = [reply | {"name": name}]
        found = []
        for instance in instances:
            state = instance.get("state")
            found.append(
                self._remember(
                    Resolved(
                        name=instance.get("name", name),
                        endpoint=instance.get("endpoint"),
                        state=state if state in _STATES else "unknown",
                    )
                )
            )
        return found

    def _remember(self, found: Resolved) -> Resolved:
        # Breakers of requests to this endpoint are reported by the agent's name.
        if found.endpoint:
            self.pool.name_endpoint(found.endpoint, found.name)
        return found

    @property
    def breakers(self) -> Breakers:
        """This agent's circuit breakers (those of its pool): wrap calls that
        do not go through the pool in them, e.g. `with agent.breakers.guard("postgres"):`.
        Every heartbeat reports them to the supervisor."""
        return self.pool.breakers

    def request_shutdown(self) -> None:
        """Sets `shutdown_requested` as SIGTERM would (an agent's own stop condition)."""
        self.shutdown_requested.set()

    def wait_for_shutdown(self, timeout: Optional[float] = None) -> bool:
        """Blocks until shutdown is requested or `timeout` seconds pass;
        returns whether it was requested. Use as an interruptible sleep."""
        return self.shutdown_requested.wait(timeout)

    def link_stats(self) -> Optional[LinkStats]:
        """Counters of the connection (heartbeats sent, rejections); None standalone."""
        return self._link.stats() if self._link is not None else None

    def logging_handler(self, level: int = logging.ERROR) -> "ErrorHandler":
        """A `logging.Handler` forwarding records at or above `level` to
        `report_error`.

        >>> agent = Agent.standalone("demo", handle_signals=False)
        >>> logging.getLogger().addHandler(agent.logging_handler(logging.WARNING))
        """
        return ErrorHandler(self, level)


def _post_resolve(link: Link, name: str) -> None:
    """Sends RESOLVE `name` without waiting for the answer (it wakes an idle agent)."""
    try:
        link.post({"type": "resolve", "name": name})
    except Exception:  # StoppedError: the agent is closing
        pass


def _resolve_from_env(name: str) -> Resolved:
    variable = re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_ENDPOINT"
    endpoint = os.environ.get(variable)
    if endpoint is None:
        try:
            dependencies = json.loads(os.environ.get(DEPENDENCIES_VARIABLE, "{}"))
            found = dependencies.get(name) if isinstance(dependencies, dict) else None
            endpoint = found if isinstance(found, str) else None
        except ValueError:
            endpoint = None
    if endpoint is None:
        raise NotFoundError(name)
    return Resolved(name=name, endpoint=endpoint, state="unknown")


class ErrorHandler(logging.Handler):
    """Forwards log records at or above its level to the supervisor's error
    bus: severity from the level, `kind` = the logger's name, `message` =
    the formatted record, `context` = logger, module, line, function, thread
    and the traceback when there is one. Records of the SDK's own logger
    (`supervisor_sdk`) are skipped so a failing link cannot loop.

    Example::

        agent = Agent.from_env()
        logging.getLogger().addHandler(ErrorHandler(agent, logging.WARNING))
        logging.getLogger("db").error("database unreachable")   # -> errors.jsonl
    """

    def __init__(self, agent: Agent, level: int = logging.ERROR) -> None:
        super().__init__(level)
        self.agent = agent

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "supervisor_sdk" or record.name.startswith("supervisor_sdk."):
            return
        try:
            context: Dict[str, Any] = {
                "logger": record.name,
                "module": record.module,
                "line": record.lineno,
                "function": record.funcName,
                "thread": record.threadName,
            }
            if record.exc_info and record.exc_info[0] is not None:
                context["traceback"] = "".join(traceback.format_exception(*record.exc_info))
            self.agent.report_error(
                record.getMessage(),
                Severity.from_logging(record.levelno),
                kind=record.name if record.name != "root" else None,
                context=context,
                correlation_id=getattr(record, "correlation_id", None),
            )
        except Exception:
            self.handleError(record)


__all__ = [
    "Agent",
    "AgentSettings",
    "ErrorHandler",
    "Resolved",
    "Severity",
    "SupervisorTimeoutError",
    "install_signal_handlers",
    "now_rfc3339",
    "now_unix_millis",
    "shutdown_requested",
]
