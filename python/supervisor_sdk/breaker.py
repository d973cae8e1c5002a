"""Circuit breakers: stop calling a target that keeps failing, try it again
after a pause, and say so in heartbeats. Mirrors `src/transport/breaker.rs`.

    closed --(failure_threshold failures within `window`)--> open
    open --(recovery_timeout passed)--> half-open (one trial call goes through)
    half-open --(the trial succeeded)--> closed
    half-open --(the trial failed)--> open

`CircuitBreaker` is the state machine of one target (time is passed in, so
it is testable without sleeping). `Breakers` is the thread-safe table of an
agent's breakers by target name: `SocketPool.request` uses it for every
request (named after the agent the endpoint was resolved from), and agent
code wraps any other call in it (`with breakers.guard("postgres"): ...`,
or `breakers.call("redis", client.ping)`). The SDK's heartbeats carry
`Breakers.reports()` in `payload.breakers`, from which the supervisor shows
the agent as degraded.

Owns breaker state and the report format. Does not own sockets or retries.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, TypeVar

from .errors import CircuitOpenError

log = logging.getLogger("supervisor_sdk")

T = TypeVar("T")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """When a breaker opens and when it tries again (seconds for durations)."""

    #: Failures within `window` that open the breaker (0 is treated as 1).
    failure_threshold: int = 5
    #: How far back failures count.
    window: float = 30.0
    #: How long an open breaker refuses calls before it lets a trial through.
    recovery_timeout: float = 10.0


class CircuitBreaker:
    """The breaker of one target. Not thread-safe on its own (`Breakers` locks).

    >>> breaker = CircuitBreaker(BreakerConfig(failure_threshold=2, recovery_timeout=1.0), now=0.0)
    >>> breaker.record_failure(0.0); breaker.record_failure(0.1)
    >>> breaker.state(0.2)
    'open'
    >>> breaker.permit(1.1)    # the trial
    >>> breaker.record_success(1.1)
    >>> breaker.state(1.2)
    'closed'
    """

    def __init__(self, config: BreakerConfig, now: float) -> None:
        self.config = BreakerConfig(
            failure_threshold=max(1, config.failure_threshold),
            window=config.window,
            recovery_timeout=config.recovery_timeout,
        )
        self._phase = CLOSED
        #: A trial call is out (half-open only).
        self._trial = False
        #: When the phase was entered.
        self._since = now
        self._failures: Deque[float] = deque()

    def permit(self, now: float) -> None:
        """Returns when a call may go out now; raises `CircuitOpenError`
        otherwise. A permitted call must end in `record_success`,
        `record_failure` or `release`."""
        if self._phase == CLOSED:
            return
        if self._phase == OPEN:
            trial_at = self._since + self.config.recovery_timeout
            if now >= trial_at:
                self._enter(HALF_OPEN, trial_at)
                self._trial = True
                return
            raise CircuitOpenError("", trial_at - now)
        if self._trial:
            raise CircuitOpenError("", 0.0)
        self._trial = True

    def record_success(self, now: float) -> None:
        """The call succeeded: a trial closes the breaker."""
        if self._phase != CLOSED:
            self._enter(CLOSED, now)

    def record_failure(self, now: float) -> None:
        """The call failed: counted while closed (opening at the threshold); a
        failed trial opens the breaker for another recovery timeout."""
        if self._phase == CLOSED:
            self._forget_old(now)
            self._failures.append(now)
            if len(self._failures) >= self.config.failure_threshold:
                self._enter(OPEN, now)
        elif self._phase == HALF_OPEN:
            self._enter(OPEN, now)

    def release(self) -> None:
        """A permitted call ended without a verdict: a trial may go again."""
        if self._phase == HALF_OPEN:
            self._trial = False

    def state(self, now: float) -> str:
        """`closed`, `open` or `half_open`; an open breaker whose recovery
        timeout has passed reads as half-open."""
        if self._phase == OPEN and now >= self._since + self.config.recovery_timeout:
            return HALF_OPEN
        return self._phase

    def report(self, target: str, now: float) -> Dict[str, Any]:
        """The breaker as a heartbeat carries it (docs/protocol.md, HEARTBEAT)."""
        state = self.state(now)
        entered = self._since
        if self._phase == OPEN and state == HALF_OPEN:
            entered = self._since + self.config.recovery_timeout
        failures = sum(1 for at in self._failures if now - at < self.config.window)
        return {
            "target": target,
            "state": state,
            "for_ms": max(0, int((now - entered) * 1000)),
            "failures": failures,
        }

    def _enter(self, phase: str, now: float) -> None:
        self._phase = phase
        self._since = now
        self._trial = False
        self._failures.clear()

    def _forget_old(self, now: float) -> None:
        while self._failures and now - self._failures[0] >= self.config.window:
            self._failures.popleft()


class Breakers:
    """The breakers of one agent (or pool) by target; safe to share between threads.

    >>> breakers = Breakers(BreakerConfig(failure_threshold=3))
    >>> with breakers.guard("postgres"):
    ...     pass                              # the call; an exception counts as a failure
    >>> breakers.call("redis", lambda: "PONG")
    'PONG'
    >>> breakers.state("postgres")
    'closed'
    """

    def __init__(self, config: Optional[BreakerConfig] = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._table: Dict[str, CircuitBreaker] = {}

    def permit(self, target: str) -> None:
        """Raises `CircuitOpenError` while `target`'s breaker is open."""
        now = self._clock()
        with self._lock:
            breaker = self._table.get(target)
            if breaker is None:
                breaker = self._table[target] = CircuitBreaker(self.config, now)
            try:
                breaker.permit(now)
            except CircuitOpenError as error:
                raise CircuitOpenError(target, error.retry_in) from None

    def record_success(self, target: str) -> None:
        self._change(target, lambda breaker, now: breaker.record_success(now))

    def record_failure(self, target: str) -> None:
        def fail(breaker: CircuitBreaker, now: float) -> None:
            before = breaker.state(now)
            breaker.record_failure(now)
            if before != OPEN and breaker.state(now) == OPEN:
                log.warning("circuit breaker to %s opened", target)

        self._change(target, fail)

    def release(self, target: str) -> None:
        self._change(target, lambda breaker, _now: breaker.release())

    @contextlib.contextmanager
    def guard(self, target: str) -> Iterator[None]:
        """Runs the block under `target`'s breaker: raises `CircuitOpenError`
        (without running it) while open; an exception from the block counts
        as a failure and propagates, a normal exit as a success."""
        self.permit(target)
        try:
            yield
        except BaseException:
            self.record_failure(target)
            raise
        self.record_success(target)

    def call(self, target: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`function(*args, **kwargs)` under `target`'s breaker (see `guard`)."""
        with self.guard(target):
            return function(*args, **kwargs)

    def state(self, target: str) -> str:
        """`closed` (also for a target never called), `open` or `half_open`."""
        now = self._clock()
        with self._lock:
            breaker = self._table.get(target)
            return breaker.state(now) if breaker is not None else CLOSED

    def reports(self) -> List[Dict[str, Any]]:
        """Every breaker's report, by target name."""
        now = self._clock()
        with self._lock:
            return [self._table[target].report(target, now) for target in sorted(self._table)]

    def _change(self, target: str, change: Callable[[CircuitBreaker, float], None]) -> None:
        now = self._clock()
        with self._lock:
            breaker = self._table.get(target)
            if breaker is not None:
                change(breaker, now)
