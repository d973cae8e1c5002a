"""Python SDK for agents run by `supervisor` (agent protocol v1; see
`docs/protocol.md` in the supervisor repository). Depends only on pyzmq.

    from supervisor_sdk import Agent, Severity

    agent = Agent.from_env_or_standalone("worker")   # Agent.from_env() to require a supervisor
    # ... bind sockets, load models ...
    agent.ready()                                     # for `readiness: sdk`
    while not agent.shutdown_requested.is_set():      # set by SIGTERM
        ...                                           # one unit of work
        agent.progress(queue_depth=3)                 # rides on the automatic heartbeats
    agent.report_error("stopping with work queued", Severity.WARNING, kind="shutdown")
    agent.close()                                     # flushes queued errors

Layout: `agent.py` (the public API, signals, logging handler), `_link.py`
(the thread owning the DEALER socket to the supervisor), `pool.py`
(`SocketPool`), `breaker.py` (circuit breakers, reported in heartbeats),
`errors.py` (exceptions).
"""

from ._link import LinkStats
from .breaker import BreakerConfig, Breakers, CircuitBreaker
from .agent import (
    DEFAULT_CALL_TIMEOUT,
    Agent,
    AgentSettings,
    ErrorHandler,
    Resolved,
    Severity,
    __version__,
    install_signal_handlers,
    now_rfc3339,
    now_unix_millis,
    shutdown_requested,
)
from .errors import (
    CircuitOpenError,
    InvalidVariableError,
    NotFoundError,
    NotSupervisedError,
    PoolExhaustedError,
    RejectedError,
    RequestTimeoutError,
    SdkError,
    StoppedError,
    SupervisorTimeoutError,
)
from .pool import PoolConfig, PooledSocket, PoolStats, SocketKind, SocketPool

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "Agent",
    "AgentSettings",
    "BreakerConfig",
    "Breakers",
    "CircuitBreaker",
    "CircuitOpenError",
    "ErrorHandler",
    "InvalidVariableError",
    "LinkStats",
    "NotFoundError",
    "NotSupervisedError",
    "PoolConfig",
    "PoolExhaustedError",
    "PoolStats",
    "PooledSocket",
    "RejectedError",
    "RequestTimeoutError",
    "Resolved",
    "SdkError",
    "Severity",
    "SocketKind",
    "SocketPool",
    "StoppedError",
    "SupervisorTimeoutError",
    "__version__",
    "install_signal_handlers",
    "now_rfc3339",
    "now_unix_millis",
    "shutdown_requested",
]
