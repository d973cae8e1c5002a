"""The agent side of the agent protocol: one thread owning one DEALER socket
connected to the supervisor's ROUTER (docs/protocol.md, sections 2-5).

It says HELLO on start, sends a HEARTBEAT every interval on its own (with the
latest payload, never queued when it cannot go at once), sends what the
public API asks for, and hands replies back to the waiting caller by `seq`.

Owns the DEALER socket, the token and the sequence numbers. Does not own the
public API (`supervisor_sdk.agent` wraps this), signal handling or retries
beyond the socket's own reconnects. Mirrors `src/transport/agent_link.rs`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import zmq

from .errors import RejectedError, SupervisorTimeoutError, StoppedError

PROTOCOL_VERSION = 1
# Replies nobody collected within this long are forgotten.
_PENDING_LIMIT = 60.0
# Seconds a stopping link waits for the supervisor to confirm its errors.
_FLUSH_LIMIT = 2.0

log = logging.getLogger("supervisor_sdk")


def until_next_beat(interval: float, unix_time: float) -> float:
    """Seconds until the next heartbeat: the next whole multiple of `interval`
    on the wall clock, so agents with the same interval beat together and the
    supervisor takes them in one wake-up (docs/protocol.md, Heartbeats).
    Never more than `interval`."""
    if interval <= 0:
        return 0.001
    return interval - (unix_time % interval)


@dataclass
class LinkStats:
    """Counters of the connection, for the agent's own diagnostics."""

    heartbeats_sent: int = 0
    #: Heartbeats not sent because the socket's queue was full.
    heartbeats_skipped: int = 0
    messages_sent: int = 0
    send_failures: int = 0
    #: Rejections nobody was waiting for (e.g. of heartbeats).
    rejections: int = 0


class Link:
    """The link thread and the handle other threads use to reach it.

    Other threads never touch the socket: they put commands on `_commands`
    and write one byte to the wake pipe, which the thread polls next to the
    socket.
    """

    def __init__(
        self,
        endpoint: str,
        agent: str,
        token: str,
        heartbeat_interval: float,
        sdk: str,
        context: Optional[zmq.Context] = None,
    ) -> None:
        self.endpoint = endpoint
        self.agent = agent
        self._token = token
        self._interval = heartbeat_interval
        self._sdk = sdk
        self._stats = LinkStats()
        self._stats_lock = threading.Lock()
        # Read by the link thread only; written through commands.
        self._payload: Optional[Dict[str, Any]] = None
        #: Reported in every heartbeat's `payload.breakers` (the agent's
        #: `Breakers`, set by `Agent`); None: no breakers.
        self.breakers: Optional[Any] = None
        self._next_seq = 1
        # seq -> (future the caller waits on, when it was sent).
        self._pending: Dict[int, Tuple[Future, float]] = {}
        # The seq of every error sent and not yet confirmed: a stopping link
        # waits for them (`_flush`), since a message still queued in libzmq's
        # I/O thread when the process exits is lost (linger only runs when
        # the context is terminated, which a shared context never is).
        self._unconfirmed: set = set()
        # Filled by any thread, drained by the link thread; the wake pipe says
        # "look at the queue".
        self._commands: "queue.SimpleQueue[Tuple[str, Any]]" = queue.SimpleQueue()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._stopped = threading.Event()
        context = context or zmq.Context.instance()
        self._dealer = context.socket(zmq.DEALER)
        self._dealer.setsockopt(zmq.LINGER, 2000)
        self._dealer.setsockopt(zmq.SNDTIMEO, 5000)
        self._dealer.setsockopt(zmq.SNDHWM, 10_000)
        self._dealer.setsockopt(zmq.RECONNECT_IVL, 100)
        self._dealer.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self._dealer.connect(endpoint)
        self._thread = threading.Thread(target=self._run, name="agent-link", daemon=True)
        self._thread.start()

    # ----- called from any thread ---------------------------------------

    def call(self, message: Dict[str, Any], timeout: float) -> Dict[str, Any]:
        """Sends `message` and waits up to `timeout` seconds for its reply.

        Raises `RejectedError` on a `rejected` reply, `SupervisorTimeoutError`
        when none came, `StoppedError` when the link has stopped.
        """
        future: Future = Future()
        self._command("send", (message, future))
        try:
            reply = future.result(timeout=timeout)
        except Exception as error:  # concurrent.futures.TimeoutError differs by version
            if isinstance(error, (RejectedError, StoppedError)):
                raise
            raise SupervisorTimeoutError(
                f"no reply from the supervisor at {self.endpoint} within {timeout:.1f}s"
            ) from None
        if reply.get("type") == "rejected":
            raise RejectedError(self.agent, str(reply.get("reason", "")))
        return reply

    def post(self, message: Dict[str, Any]) -> None:
        """Queues `message`; sent in order with a blocking send, no reply awaited."""
        self._command("send", (message, None))

    def set_payload(self, payload: Dict[str, Any]) -> None:
        """The payload attached to every following heartbeat."""
        try:
            self._command("payload", payload)
        except StoppedError:
            pass

    def stats(self) -> LinkStats:
        with self._stats_lock:
            return LinkStats(**vars(self._stats))

    def stop(self, timeout: float = 3.0) -> None:
        """Stops the thread after sending what is queued and waiting (up to
        2 s) until the supervisor has confirmed the errors among it."""
        try:
            self._command("stop", None)
        except StoppedError:
            pass
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopped.is_set()

    def _command(self, kind: str, value: Any) -> None:
        if self._stopped.is_set():
            raise StoppedError("the agent link has stopped")
        self._commands.put((kind, value))
        try:
            os.write(self._wake_write, b"\x01")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    # ----- the link thread --------------------------------------------------

    def _run(self) -> None:
        try:
            hello = {"type": "hello", "pid": os.getpid(), "sdk": self._sdk}
            self._send(hello, 0)
            poller = zmq.Poller()
            poller.register(self._dealer, zmq.POLLIN)
            poller.register(self._wake_read, zmq.POLLIN)
            # The first heartbeat goes out at once.
            next_heartbeat = time.monotonic()
            while True:
                if time.monotonic() >= next_heartbeat:
                    self._heartbeat()
                    # Both clocks read together, after the send (an older
                    # monotonic reading makes a second heartbeat follow at once).
                    now, wall = time.monotonic(), time.time()
                    next_heartbeat = now + until_next_beat(self._interval, wall)
                wait_ms = max(1, int((next_heartbeat - time.monotonic()) * 1000))
                try:
                    events = dict(poller.poll(wait_ms))
                except zmq.ZMQError as error:
                    if error.errno == zmq.EINTR:
                        continue
                    log.error("agent link poll failed: %s", error)
                    return
                if self._dealer in events:
                    self._receive_replies()
                if self._wake_read in events:
                    try:
                        while os.read(self._wake_read, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    if not self._drain_commands():
                        return
        finally:
            self._stopped.set()
            self._drain_commands()
            self._flush()
            for future, _ in self._pending.values():
                if not future.done():
                    future.set_exception(StoppedError("the agent link has stopped"))
            self._dealer.close()
            for fd in (self._wake_read, self._wake_write):
                os.close(fd)

    def _drain_commands(self) -> bool:
        """Handles queued commands; False once told to stop."""
        while True:
            try:
                kind, value = self._commands.get_nowait()
            except queue.Empty:
                return True
            if kind == "send":
                message, future = value
                if self._stopped.is_set():
                    if future is not None:
                        future.set_exception(StoppedError("the agent link has stopped"))
                    continue
                seq = self._next_seq
                self._next_seq += 1
                if future is not None:
                    self._pending[seq] = (future, time.monotonic())
                if message.get("type") == "error":
                    message = dict(message, ack=True)
                    self._unconfirmed.add(seq)
                self._send(message, seq)
            elif kind == "payload":
                self._payload = value
            elif kind == "stop":
                return False

    def _flush(self) -> None:
        """Reads replies until every error sent is confirmed (acknowledged
        or rejected), for up to `_FLUSH_LIMIT` seconds."""
        deadline = time.monotonic() + _FLUSH_LIMIT
        while self._unconfirmed:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "stopping with %d error(s) the supervisor has not confirmed",
                    len(self._unconfirmed),
                )
                return
            try:
                if self._dealer.poll(max(1, int(left * 1000)), zmq.POLLIN):
                    self._receive_replies()
            except zmq.ZMQError:
                return

    def _envelope(self, message: Dict[str, Any], seq: int) -> bytes:
        body = dict(message)
        body.update(v=PROTOCOL_VERSION, agent=self.agent, token=self._token, seq=seq)
        return json.dumps(body, separators=(",", ":")).encode()

    def _heartbeat(self) -> None:
        seq = self._next_seq
        self._next_seq += 1
        message: Dict[str, Any] = {"type": "heartbeat"}
        payload = dict(self._payload) if self._payload else {}
        breakers = self.breakers
        if breakers is not None:
            reports = breakers.reports()
            if reports:
                payload["breakers"] = reports
        if payload:
            message["payload"] = payload
        try:
            # A heartbeat that cannot go now is worthless later: never wait.
            self._dealer.send_multipart([b"", self._envelope(message, seq)], zmq.DONTWAIT)
            self._count("heartbeats_sent")
        except zmq.ZMQError:
            self._count("heartbeats_skipped")
        now = time.monotonic()
        for old in [seq for seq, (_, since) in self._pending.items() if now - since > _PENDING_LIMIT]:
            future, _ = self._pending.pop(old)
            if not future.done():
                future.set_exception(SupervisorTimeoutError("no reply from the supervisor"))

    def _send(self, message: Dict[str, Any], seq: int) -> None:
        try:
            # Blocking up to SNDTIMEO: errors and READY must not be dropped silently.
            self._dealer.send_multipart([b"", self._envelope(message, seq)])
            self._count("messages_sent")
        except zmq.ZMQError as error:
            self._count("send_failures")
            log.warning(
                "cannot send %s to the supervisor at %s: %s",
                message.get("type"),
                self.endpoint,
                error,
            )

    def _receive_replies(self) -> None:
        while True:
            try:
                frames = self._dealer.recv_multipart(zmq.DONTWAIT)
            except zmq.Again:
                return
            try:
                reply = json.loads(frames[-1])
                if not isinstance(reply, dict):
                    raise ValueError("not a JSON object")
                seq = int(reply.get("seq", 0))
            except (ValueError, TypeError) as error:
                log.warning("unreadable reply from the supervisor: %s", error)
                continue
            self._unconfirmed.discard(seq)
            waiting = self._pending.pop(seq, None)
            if waiting is not None:
                future, _ = waiting
                if not future.done():
                    future.set_result(reply)
            elif reply.get("type") == "rejected":
                self._count("rejections")
                log.warning(
                    "the supervisor rejected a message from %s: %s", self.agent, reply.get("reason")
                )

    def _count(self, counter: str) -> None:
        with self._stats_lock:
            setattr(self._stats, counter, getattr(self._stats, counter) + 1)
