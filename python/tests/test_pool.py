"""`SocketPool` without a supervisor: bounded per key and in total, a REQ
whose reply timed out is discarded (never handed out again), lazy-pirate
`request()` retries on a fresh socket, idle expiry, reuse of good sockets.
"""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from supervisor_sdk import PoolConfig, PoolExhaustedError, RequestTimeoutError, SocketKind, SocketPool


def rep_server(replies, drop_first: int = 0):
    """A REP socket on a loopback port answering `replies` requests with an
    echo, after silently dropping the first `drop_first` (each on a socket
    that is then closed, as a crashed server would)."""
    context = zmq.Context.instance()
    ready = threading.Event()
    endpoint = []

    def serve():
        dropped = 0
        port = None
        answered = 0
        while answered < replies:
            socket = context.socket(zmq.REP)
            socket.setsockopt(zmq.LINGER, 0)
            if port is None:
                port = socket.bind_to_random_port("tcp://127.0.0.1")
                endpoint.append(f"tcp://127.0.0.1:{port}")
                ready.set()
            else:
                # libzmq closes sockets in the background: the port may still
                # be held for a moment after the close above.
                for _ in range(250):
                    try:
                        socket.bind(f"tcp://127.0.0.1:{port}")
                        break
                    except zmq.ZMQError:
                        time.sleep(0.02)
                else:
                    socket.close()
                    return
            while answered < replies:
                if not socket.poll(10_000):
                    socket.close()
                    return
                request = socket.recv()
                if dropped < drop_first:
                    dropped += 1
                    break  # no reply: close and rebind
                socket.send(request)
                answered += 1
            socket.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    return endpoint[0], thread


def test_request_round_trip_reuses_one_socket():
    endpoint, server = rep_server(3)
    pool = SocketPool()
    for index in range(3):
        assert pool.request(endpoint, f"m{index}", timeout=5, retries=0) == f"m{index}".encode()
    server.join(10)
    stats = pool.stats()
    assert (stats.created, stats.reused, stats.discarded, stats.idle, stats.in_use) == (1, 2, 0, 1, 0)


def test_a_req_without_its_reply_is_discarded():
    pool = SocketPool()
    with pool.checkout(SocketKind.REQ, "tcp://127.0.0.1:9") as socket:
        socket.send(b"hello")
        with pytest.raises(TimeoutError):
            socket.recv(timeout=0.05)
    stats = pool.stats()
    assert (stats.discarded, stats.idle, stats.in_use) == (1, 0, 0)
    # The next checkout gets a fresh socket, which can send at once.
    with pool.checkout(SocketKind.REQ, "tcp://127.0.0.1:9") as socket:
        socket.send(b"again")
    assert pool.stats().created == 2


def test_a_req_abandoned_mid_request_is_discarded():
    pool = SocketPool()
    socket = pool.checkout(SocketKind.REQ, "tcp://127.0.0.1:9")
    socket.send(b"hello")
    socket.close()  # without receiving: the REQ state machine is stuck
    assert pool.stats().discarded == 1


def test_an_exception_in_the_block_discards_the_socket():
    pool = SocketPool()
    with pytest.raises(RuntimeError):
        with pool.checkout(SocketKind.PUSH, "tcp://127.0.0.1:9"):
            raise RuntimeError("boom")
    assert (pool.stats().discarded, pool.stats().idle) == (1, 0)


def test_lazy_pirate_retries_on_a_fresh_socket():
    endpoint, server = rep_server(1, drop_first=1)
    pool = SocketPool()
    assert pool.request(endpoint, b"ping", timeout=1.0, retries=3) == b"ping"
    server.join(10)
    stats = pool.stats()
    assert stats.discarded == 1 and stats.created == 2


def test_request_gives_up_after_its_retries():
    pool = SocketPool(PoolConfig(retry_backoff=0.01))
    with pytest.raises(RequestTimeoutError) as raised:
        pool.request("tcp://127.0.0.1:9", b"ping", timeout=0.05, retries=2)
    assert raised.value.attempts == 3
    assert pool.stats().discarded == 3
    assert pool.stats().in_use == 0


def test_checkouts_are_bounded_per_key():
    pool = SocketPool(PoolConfig(max_per_key=2, checkout_timeout=0.1))
    first = pool.checkout(SocketKind.PUSH, "tcp://127.0.0.1:1")
    second = pool.checkout(SocketKind.PUSH, "tcp://127.0.0.1:1")
    with pytest.raises(PoolExhaustedError):
        pool.checkout(SocketKind.PUSH, "tcp://127.0.0.1:1")
    # Another key is not limited by this one.
    pool.checkout(SocketKind.PUSH, "tcp://127.0.0.1:2").close()
    first.close()
    again = pool.checkout(SocketKind.PUSH, "tcp://127.0.0.1:1")
    assert pool.stats().reused == 1
    second.close()
    again.close()
    assert pool.stats().idle == 2 + 1


def test_a_waiting_checkout_gets_the_returned_socket():
    pool = SocketPool(PoolConfig(max_per_key=1, checkout_timeout=5))
    held = pool.checkout(SocketKind.PUSH, "tcp://127.0.0.1:1")
    threading.Timer(0.1, held.close).start()
    pool.checkout(SocketKind.PUSH, "tcp://127.0.0.1:1").close()
    assert pool.stats().created == 1


def test_the_total_limit_evicts_idle_sockets_of_other_keys():
    pool = SocketPool(PoolConfig(max_total=1, checkout_timeout=0.1))
    pool.checkout(SocketKind.PUSH, "tcp://127.0.0.1:1").close()
    other = pool.checkout(SocketKind.PUSH, "tcp://127.0.0.1:2")
    assert pool.stats().expired == 1
    with pytest.raises(PoolExhaustedError):
        pool.checkout(SocketKind.PUSH, "tcp://127.0.0.1:3")
    other.close()


def test_idle_sockets_expire():
    pool = SocketPool(PoolConfig(idle_timeout=0))
    pool.checkout(SocketKind.PUSH, "tcp://127.0.0.1:1").close()
    assert pool.expire_idle() == 1
    assert pool.stats().idle == 0


def test_an_unanswered_request_to_a_named_agent_calls_the_hook_and_a_retry_reaches_it():
    """The SDK's `Agent` sets the hook to resolve the target again, which
    starts an agent the supervisor stopped as idle; here the hook starts the
    server itself."""
    context = zmq.Context.instance()
    probe = context.socket(zmq.REP)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(linger=0)
    endpoint = f"tcp://127.0.0.1:{port}"
    pool = SocketPool()
    pool.name_endpoint(endpoint, "lazy")
    calls = []

    def serve():
        socket = context.socket(zmq.REP)
        socket.setsockopt(zmq.LINGER, 0)
        for _ in range(250):  # the closed probe frees the port in the background
            try:
                socket.bind(endpoint)
                break
            except zmq.ZMQError:
                time.sleep(0.02)
        if socket.poll(10_000):
            socket.send(b"awake:" + socket.recv())
        time.sleep(0.2)
        socket.close()

    def wake(name):
        calls.append(name)
        threading.Thread(target=serve, daemon=True).start()

    pool.on_unanswered(wake)
    assert pool.request(endpoint, b"ping", timeout=0.3, retries=5) == b"awake:ping"
    assert calls == ["lazy"]
    with pytest.raises(RequestTimeoutError):
        pool.request("tcp://127.0.0.1:9", b"ping", timeout=0.02, retries=1)
    assert calls == ["lazy"], "an unnamed endpoint calls nothing"
