"""Exceptions raised by the SDK. All derive from `SdkError`.

Owns nothing else; `agent.py` and `pool.py` raise these.
"""

from __future__ import annotations


class SdkError(Exception):
    """Base class of every SDK error."""


class NotSupervisedError(SdkError):
    """A variable the supervisor injects is missing: the agent was not started
    by `supervisor up`. Use `Agent.standalone(name)` (or
    `Agent.from_env_or_standalone`) to run it by hand.
    """

    def __init__(self, variable: str) -> None:
        self.variable = variable
        super().__init__(
            f"`{variable}` is not set: this agent was not started by the supervisor "
            "(run it with `supervisor up`, or use Agent.standalone / Agent.from_env_or_standalone)"
        )


class InvalidVariableError(SdkError):
    """A variable is set but unusable."""

    def __init__(self, variable: str, value: str, reason: str) -> None:
        self.variable = variable
        self.value = value
        super().__init__(f"`{variable}`={value!r}: {reason}")


class NotFoundError(SdkError):
    """RESOLVE: the supervisor (or, standalone, the environment) knows no such agent."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"the supervisor knows no agent `{name}`")


class RejectedError(SdkError):
    """The supervisor answered `rejected` (bad token, unknown agent, busy, ...)."""

    def __init__(self, agent: str, reason: str) -> None:
        self.agent = agent
        self.reason = reason
        super().__init__(f"the supervisor rejected a message from `{agent}`: {reason}")


class SupervisorTimeoutError(SdkError, TimeoutError):
    """No reply from the supervisor in time."""


class StoppedError(SdkError):
    """The agent's connection thread has stopped (after `Agent.close`)."""


class PoolExhaustedError(SdkError):
    """`SocketPool.checkout` waited its checkout timeout for a free slot."""

    def __init__(self, endpoint: str, in_use: int) -> None:
        self.endpoint = endpoint
        self.in_use = in_use
        super().__init__(
            f"socket pool exhausted for {endpoint}: {in_use} sockets in use and the limits reached"
        )


class RequestTimeoutError(SdkError, TimeoutError):
    """`SocketPool.request`: no reply after every attempt."""

    def __init__(self, endpoint: str, attempts: int, timeout: float) -> None:
        self.endpoint = endpoint
        self.attempts = attempts
        self.timeout = timeout
        super().__init__(
            f"no reply from {endpoint} after {attempts} attempt(s) of {timeout * 1000:.0f} ms"
        )


class CircuitOpenError(SdkError):
    """The circuit breaker of `target` is open: the call was not made (see
    `breaker.py`). `retry_in` is how many seconds until a trial is allowed
    (0 while another trial is out)."""

    def __init__(self, target: str, retry_in: float) -> None:
        self.target = target
        self.retry_in = retry_in
        super().__init__(f"circuit breaker to {target} is open (next try in {retry_in * 1000:.0f} ms)")
