"""`SocketPool`: client sockets (they connect, never bind) reused across
requests, keyed by (socket kind, endpoint). Same guarantees as the Rust
`SocketPool` (`src/transport/pool.rs`), each fixing a fault of the legacy
`zmq_pool.py`:

- bounded: at most `max_per_key` live sockets per key and `max_total`
  overall, idle or in use (checkout waits, then raises `PoolExhaustedError`);
- sane defaults on every socket: LINGER 0, send and receive timeouts;
- a REQ socket that sent a request and did not get its reply (timeout, an
  exception, or the guard closed early) is discarded, never returned: its
  state machine would refuse the next send;
- idle sockets expire after `idle_timeout`;
- `SocketPool.request` is the lazy-pirate pattern: on timeout, drop the
  socket, back off (doubling, at most 1 s), retry on a fresh one;
- each request goes through the circuit breaker of its target
  (`breaker.py`): a target whose requests keep failing is refused at once
  for a while instead of costing every caller its timeouts.

Owns the idle sockets, behind one lock that is never held while a socket is
used: each checked-out socket belongs to one thread through its guard. Does
not own servers or any agent protocol.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import zmq

from .breaker import BreakerConfig, Breakers
from .errors import PoolExhaustedError, RequestTimeoutError

log = logging.getLogger("supervisor_sdk")

Frame = Union[bytes, str]


class SocketKind(enum.Enum):
    """The client socket kinds the pool hands out."""

    REQ = zmq.REQ
    DEALER = zmq.DEALER
    PUSH = zmq.PUSH
    SUB = zmq.SUB


@dataclass(frozen=True)
class PoolConfig:
    """Limits and defaults of a pool (seconds for durations)."""

    #: Live sockets per (kind, endpoint).
    max_per_key: int = 16
    #: Live sockets in the whole pool.
    max_total: int = 256
    #: Idle sockets older than this are closed.
    idle_timeout: float = 300.0
    #: SNDTIMEO of every socket.
    send_timeout: float = 1.0
    #: RCVTIMEO of every socket (requests use their own timeout).
    receive_timeout: float = 5.0
    #: How long a checkout waits for a free slot.
    checkout_timeout: float = 5.0
    #: First pause between lazy-pirate attempts; doubles per attempt, at most 1 s.
    retry_backoff: float = 0.02
    #: The circuit breaker around `request`, per target; None turns it off.
    breaker: Optional[BreakerConfig] = field(default_factory=BreakerConfig)


@dataclass(frozen=True)
class PoolStats:
    """Pool counters and current occupancy."""

    #: Sockets opened.
    created: int = 0
    #: Checkouts served by an idle socket.
    reused: int = 0
    #: Sockets closed because they were broken (REQ without its reply, errors).
    discarded: int = 0
    #: Idle sockets closed by age or to make room under `max_total`.
    expired: int = 0
    #: Checked out now.
    in_use: int = 0
    #: Idle now.
    idle: int = 0


_Key = Tuple[SocketKind, str]


@dataclass
class _Slots:
    idle: Dict[_Key, List[Tuple[zmq.Socket, float]]] = field(default_factory=dict)
    live_per_key: Dict[_Key, int] = field(default_factory=dict)
    live_total: int = 0
    in_use: int = 0


class SocketPool:
    """A bounded pool of client sockets, safe to share between threads.

    >>> pool = SocketPool()
    >>> reply = pool.request("tcp://127.0.0.1:7200", b"ping", timeout=0.5, retries=2)  # doctest: +SKIP
    >>> with pool.checkout(SocketKind.PUSH, "tcp://127.0.0.1:7300") as socket:      # doctest: +SKIP
    ...     socket.send(b"job")
    """

    def __init__(self, config: Optional[PoolConfig] = None, context: Optional[zmq.Context] = None) -> None:
        config = config or PoolConfig()
        # Zero limits are raised to 1, as in the Rust pool.
        self.config = PoolConfig(
            **{
                **vars(config),
                "max_per_key": max(1, config.max_per_key),
                "max_total": max(1, config.max_total),
            }
        )
        self._context = context or zmq.Context.instance()
        self._slots = _Slots()
        # Guards `_slots` and the counters; notified whenever a socket is
        # returned or closed. Never held while a socket is in use.
        self._freed = threading.Condition(threading.Lock())
        self._created = self._reused = self._discarded = self._expired = 0
        #: The breakers of this pool's targets: the ones `request` uses, and
        #: for guarding any other call the agent makes (a database, HTTP) so
        #: that it shows in the same heartbeat reports.
        self.breakers = Breakers(self.config.breaker or BreakerConfig())
        # Endpoint -> the agent name it was resolved from.
        self._targets: Dict[str, str] = {}
        # See `on_unanswered`; set by the SDK's `Agent`.
        self._unanswered: Optional[Callable[[str], None]] = None

    def on_unanswered(self, hook: Callable[[str], None]) -> None:
        """Calls `hook` with the agent's name when the first attempt of a
        `request` to an endpoint named by `name_endpoint` gets no reply,
        before the retries. The SDK's `Agent` sets it to resolve that agent
        again, which starts it if the supervisor stopped it as idle
        (`idle_stop`); the retries then reach it once it listens (a fixed
        port) or fail (a port of its own choosing: resolve again)."""
        self._unanswered = hook

    def name_endpoint(self, endpoint: str, name: str) -> None:
        """Names the target behind `endpoint` (the SDK does this for every
        endpoint it resolves), so its breaker is reported as `name`."""
        with self._freed:
            self._targets[endpoint] = name

    def target_of(self, endpoint: str) -> str:
        """The breaker target of `endpoint`: its name if known, else itself."""
        with self._freed:
            return self._targets.get(endpoint, endpoint)

    def stats(self) -> PoolStats:
        """Counters and current occupancy."""
        with self._freed:
            return PoolStats(
                created=self._created,
                reused=self._reused,
                discarded=self._discarded,
                expired=self._expired,
                in_use=self._slots.in_use,
                idle=sum(len(idle) for idle in self._slots.idle.values()),
            )

    def expire_idle(self) -> int:
        """Closes idle sockets older than the idle timeout (also done on every
        checkout). Returns how many were closed."""
        with self._freed:
            expired = self._take_expired(time.monotonic())
            if expired:
                self._freed.notify_all()
        for socket in expired:
            socket.close(linger=0)
        return len(expired)

    def checkout(self, kind: SocketKind, endpoint: str) -> "PooledSocket":
        """A socket of `kind` connected to `endpoint`: an idle one if any, else
        a new one, waiting up to the checkout timeout for a free slot.

        Use it as a context manager: leaving the block returns it to the pool,
        or discards it when it is broken or the block raised.
        """
        key: _Key = (kind, endpoint)
        deadline = time.monotonic() + self.config.checkout_timeout
        closing: List[zmq.Socket] = []
        try:
            with self._freed:
                while True:
                    closing.extend(self._take_expired(time.monotonic()))
                    idle = self._slots.idle.get(key)
                    if idle:
                        socket, _ = idle.pop()
                        if not idle:
                            del self._slots.idle[key]
                        self._slots.in_use += 1
                        self._reused += 1
                        return PooledSocket(self, kind, endpoint, socket)
                    live_here = self._slots.live_per_key.get(key, 0)
                    if live_here < self.config.max_per_key:
                        if self._slots.live_total >= self.config.max_total:
                            victim = self._oldest_idle()
                            if victim is not None:
                                # Make room by closing the oldest idle socket of another key.
                                victims = self._slots.idle[victim]
                                closing.append(victims.pop(0)[0])
                                if not victims:
                                    del self._slots.idle[victim]
                                self._forget(victim)
                                self._expired += 1
                                continue
                        else:
                            self._slots.live_per_key[key] = live_here + 1
                            self._slots.live_total += 1
                            self._slots.in_use += 1
                            break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise PoolExhaustedError(endpoint, self._slots.in_use)
                    self._freed.wait(remaining)
        finally:
            for socket in closing:
                socket.close(linger=0)
        # A slot is reserved: open the socket outside the lock.
        try:
            socket = self._open(kind, endpoint)
        except Exception:
            with self._freed:
                self._forget(key)
                self._slots.in_use -= 1
                self._freed.notify()
            raise
        with self._freed:
            self._created += 1
        return PooledSocket(self, kind, endpoint, socket)

    def request(self, endpoint: str, message: Frame, timeout: float = 5.0, retries: int = 3) -> bytes:
        """Lazy-pirate request/reply: send `message` on a pooled REQ socket and
        wait `timeout` seconds for the reply; on timeout discard that socket,
        pause (doubling from `retry_backoff`, at most 1 s) and try again on a
        new one, `retries` more times. A socket that answered goes back to the
        pool. Returns the reply's last frame; raises `RequestTimeoutError`.

        The whole request passes the target's circuit breaker (unless
        `PoolConfig.breaker` is None): while it is open this raises
        `CircuitOpenError` at once; a request that got no reply after every
        attempt counts as one failure, a reply as a success.
        """
        if self.config.breaker is None:
            return self._attempts(endpoint, message, timeout, retries)
        target = self.target_of(endpoint)
        self.breakers.permit(target)
        try:
            reply = self._attempts(endpoint, message, timeout, retries)
        except PoolExhaustedError:
            self.breakers.release(target)
            raise
        except BaseException:
            self.breakers.record_failure(target)
            raise
        self.breakers.record_success(target)
        return reply

    def _attempts(self, endpoint: str, message: Frame, timeout: float, retries: int) -> bytes:
        backoff = self.config.retry_backoff
        for attempt in range(retries + 1):
            with self.checkout(SocketKind.REQ, endpoint) as socket:
                try:
                    socket.send(message)
                    return socket.recv(timeout=timeout)
                except (zmq.ZMQError, TimeoutError) as error:
                    # The guard discards the socket: it is waiting for a reply.
                    log.debug("request to %s failed (attempt %d): %s", endpoint, attempt, error)
            if attempt == 0:
                self._tell_unanswered(endpoint)
            if attempt < retries:
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        raise RequestTimeoutError(endpoint, retries + 1, timeout)

    def _tell_unanswered(self, endpoint: str) -> None:
        """Calls the `on_unanswered` hook if `endpoint` is named. Without the lock."""
        with self._freed:
            name = self._targets.get(endpoint)
        hook = self._unanswered
        if hook is not None and name is not None:
            hook(name)

    # ----- internals (called with the lock held unless said otherwise) ------

    def _open(self, kind: SocketKind, endpoint: str) -> zmq.Socket:
        """Called without the lock."""
        socket = self._context.socket(kind.value)
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDTIMEO, int(self.config.send_timeout * 1000))
            socket.setsockopt(zmq.RCVTIMEO, int(self.config.receive_timeout * 1000))
            socket.connect(endpoint)
        except Exception:
            socket.close(linger=0)
            raise
        return socket

    def _take_expired(self, now: float) -> List[zmq.Socket]:
        expired: List[zmq.Socket] = []
        for key in list(self._slots.idle):
            keep = []
            for socket, since in self._slots.idle[key]:
                if now - since >= self.config.idle_timeout:
                    expired.append(socket)
                    self._forget(key)
                else:
                    keep.append((socket, since))
            if keep:
                self._slots.idle[key] = keep
            else:
                del self._slots.idle[key]
        self._expired += len(expired)
        return expired

    def _oldest_idle(self) -> Optional[_Key]:
        oldest: Optional[Tuple[float, _Key]] = None
        for key, idle in self._slots.idle.items():
            for _, since in idle:
                if oldest is None or since < oldest[0]:
                    oldest = (since, key)
        return oldest[1] if oldest else None

    def _forget(self, key: _Key) -> None:
        """One fewer live socket under `key`."""
        count = self._slots.live_per_key.get(key, 0) - 1
        if count > 0:
            self._slots.live_per_key[key] = count
        else:
            self._slots.live_per_key.pop(key, None)
        self._slots.live_total = max(0, self._slots.live_total - 1)

    def _give_back(self, kind: SocketKind, endpoint: str, socket: zmq.Socket, keep: bool) -> None:
        """Called without the lock, by `PooledSocket.close`."""
        key: _Key = (kind, endpoint)
        with self._freed:
            self._slots.in_use -= 1
            if keep:
                self._slots.idle.setdefault(key, []).append((socket, time.monotonic()))
            else:
                self._forget(key)
                self._discarded += 1
            self._freed.notify()
        if not keep:
            socket.close(linger=0)


class PooledSocket:
    """A checked-out socket. Closing it (or leaving its `with` block) returns
    it to the pool, unless it is broken: a REQ still waiting for its reply, a
    failed send/receive, an exception in the block, or `discard()` called.
    """

    def __init__(self, pool: SocketPool, kind: SocketKind, endpoint: str, socket: zmq.Socket) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self._pool = pool
        self._socket: Optional[zmq.Socket] = socket
        #: A REQ sent and has not received yet.
        self.awaiting_reply = False
        self.broken = False

    def __enter__(self) -> "PooledSocket":
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if value is not None:
            self.broken = True
        self.close()

    def __del__(self) -> None:
        # A guard dropped without close(): give the slot back all the same.
        if getattr(self, "_socket", None) is not None:
            self.close()

    @property
    def socket(self) -> zmq.Socket:
        """The raw pyzmq socket, for options and polling. Sending or receiving
        on it directly bypasses the REQ bookkeeping: call `discard()` if you
        leave it mid-request."""
        if self._socket is None:
            raise ValueError("this pooled socket was returned to its pool")
        return self._socket

    def send(self, frame: Frame) -> None:
        """Sends one frame (waits at most the send timeout)."""
        self.send_multipart([frame])

    def send_multipart(self, frames: Sequence[Frame]) -> None:
        """Sends a multi-frame message (waits at most the send timeout)."""
        encoded = [frame.encode() if isinstance(frame, str) else frame for frame in frames]
        try:
            self.socket.send_multipart(encoded)
        except zmq.ZMQError:
            self.broken = True
            raise
        if self.kind is SocketKind.REQ:
            self.awaiting_reply = True

    def recv(self, timeout: Optional[float] = None) -> bytes:
        """Receives one message and returns its last frame (the body, after
        any envelope), waiting at most `timeout` seconds (default: the pool's
        receive timeout). Raises `TimeoutError` when nothing came; a REQ
        that timed out is then discarded, never handed out again."""
        return self.recv_multipart(timeout)[-1]

    def recv_multipart(self, timeout: Optional[float] = None) -> List[bytes]:
        """Receives one whole message, waiting at most `timeout` seconds."""
        socket = self.socket
        if timeout is None:
            timeout = self._pool.config.receive_timeout
        try:
            ready = socket.poll(max(0, int(timeout * 1000)), zmq.POLLIN)
            frames = socket.recv_multipart(zmq.DONTWAIT) if ready else None
        except zmq.ZMQError:
            self.broken = True
            raise
        if frames is None:
            # A REQ without its reply is broken for good; other kinds are fine.
            if self.kind is SocketKind.REQ:
                self.broken = True
            raise TimeoutError(f"no reply from {self.endpoint} within {timeout * 1000:.0f} ms")
        self.awaiting_reply = False
        return frames

    def subscribe(self, prefix: Frame) -> None:
        """SUB sockets: adds a subscription."""
        self.socket.setsockopt(zmq.SUBSCRIBE, prefix.encode() if isinstance(prefix, str) else prefix)

    def discard(self) -> None:
        """Marks the socket broken: closing will close it instead of returning it."""
        self.broken = True

    def close(self) -> None:
        """Returns the socket to the pool, or discards it when broken. Idempotent."""
        socket, self._socket = self._socket, None
        if socket is None:
            return
        keep = not self.broken and not self.awaiting_reply
        self._pool._give_back(self.kind, self.endpoint, socket, keep)
