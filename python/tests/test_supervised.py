"""Python agents under a real `supervisor up` (the binary of SUPERVISOR_BIN):
`readiness: sdk` gates dependents, heartbeats keep an idle agent alive, an
agent whose heartbeats stop (SIGSTOP, or a C call holding the GIL) is
restarted, a deadlocked worker is caught by `progress_timeout`, errors land
in errors.jsonl in order, RESOLVE answers another agent's endpoint.
"""

from __future__ import annotations

import os
import signal
import socket
import time

from conftest import alive, wait_until

BOUND = 60.0


def test_ready_gates_dependents(up):
    running = up(
        """
version: 1
agents:
  slow:
    command: ["@PYTHON@", "@AGENT@", "--ready-after", "1.0"]
    readiness: sdk
  user:
    command: ["@PYTHON@", "@AGENT@"]
    dependencies: [slow]
    readiness: sdk
  free:
    command: ["@PYTHON@", "@AGENT@"]
    readiness: sdk
""",
        "--exit-when-ready",
    )
    assert running.wait(BOUND) == 0, running.output
    assert "all ready: 3/3 agents" in running.output
    slow_ready = running.first("ready", "slow").nanos
    assert running.first("start", "user").nanos >= slow_ready, "user started before slow was ready"
    # An agent without the dependency does not wait for it.
    assert running.first("start", "free").nanos < slow_ready


def test_heartbeats_keep_an_idle_agent_alive(up):
    running = up(
        """
version: 1
agents:
  idle:
    command: ["@PYTHON@", "@AGENT@"]
    readiness: sdk
    heartbeat: { interval: 100ms, misses: 10 }
"""
    )
    running.wait_for_output("all ready: 1/1 agents", BOUND)
    pid = running.first("start", "idle").pid
    # Thirty heartbeat intervals (three deadlines of 1 s, tolerant of a
    # loaded machine) pass with no progress reported: only the background
    # thread's heartbeats keep it alive.
    time.sleep(3.0)
    assert len(running.records("start", "idle")) == 1, running.output
    assert alive(pid)


def _restarted(running, name: str, old_pid: int) -> bool:
    return any(record.pid != old_pid for record in running.records("ready", name))


def test_a_sigstopped_agent_is_restarted(up):
    running = up(
        """
version: 1
agents:
  victim:
    command: ["@PYTHON@", "@AGENT@"]
    readiness: sdk
    heartbeat: { interval: 100ms, misses: 3 }
"""
    )
    running.wait_for_output("all ready: 1/1 agents", BOUND)
    old = running.first("ready", "victim").pid
    os.kill(old, signal.SIGSTOP)
    wait_until("the hung agent restarted and ready", BOUND, lambda: _restarted(running, "victim", old))
    wait_until("the stopped process killed", 10, lambda: not alive(old))


def test_an_agent_holding_the_gil_is_restarted(up):
    running = up(
        """
version: 1
agents:
  stuck:
    command: ["@PYTHON@", "@AGENT@", "--hang", "gil"]
    readiness: sdk
    heartbeat: { interval: 100ms, misses: 3 }
    restart: { policy: always, backoff: { initial: 5s, max: 5s } }
"""
    )
    running.wait_for_output("all ready: 1/1 agents", BOUND)
    old = running.first("ready", "stuck").pid
    # Its heartbeat thread cannot run: the supervisor kills it.
    wait_until("the GIL-holding agent killed", BOUND, lambda: not alive(old))
    wait_until("the agent started again", BOUND, lambda: len(running.records("start", "stuck")) >= 2)


def test_a_deadlocked_worker_is_caught_by_progress_timeout(up):
    running = up(
        """
version: 1
agents:
  deadlocked:
    command: ["@PYTHON@", "@AGENT@", "--hang", "deadlock"]
    readiness: sdk
    heartbeat: { interval: 100ms, misses: 30, progress_timeout: 1s }
    restart: { policy: always, backoff: { initial: 5s, max: 5s } }
"""
    )
    running.wait_for_output("all ready: 1/1 agents", BOUND)
    old = running.first("ready", "deadlocked").pid
    # Heartbeats keep coming (the link thread is fine); progress does not.
    # (misses: 30, so a loaded machine delaying a heartbeat cannot be taken
    # for the deadlock: only the 1 s progress timeout can fire first.)
    wait_until("the deadlocked agent killed", BOUND, lambda: not alive(old))
    assert "no progress" in running.output, running.output


def test_errors_arrive_in_errors_jsonl_in_order(up):
    running = up(
        """
version: 1
agents:
  reporter:
    command: ["@PYTHON@", "@AGENT@", "--errors", "5"]
    readiness: sdk
"""
    )
    running.wait_for_output("all ready: 1/1 agents", BOUND)

    def ours():
        return [error for error in running.errors() if error.get("agent") == "reporter"]

    wait_until("six errors in errors.jsonl", BOUND, lambda: len(ours()) >= 6)
    errors = ours()
    assert [error["message"] for error in errors[:5]] == [f"error {index}" for index in range(5)]
    assert all(error["source"] == "sdk" and error["kind"] == "test" for error in errors[:5])
    assert [error["context"]["index"] for error in errors[:5]] == list(range(5))
    logged = errors[5]
    assert (logged["message"], logged["kind"], logged["severity"]) == ("logged failure", "worker", "error")
    assert logged["context"]["logger"] == "worker"


def test_resolve_answers_where_another_agent_serves(up):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = up(
        """
version: 1
agents:
  service:
    command: ["@PYTHON@", "@AGENT@"]
    port: PORT
    readiness: sdk
  client:
    command: ["@PYTHON@", "@AGENT@", "--resolve", "service"]
    dependencies: [service]
    readiness: sdk
""".replace("PORT", str(port)),
        "--exit-when-ready",
    )
    assert running.wait(BOUND) == 0, running.output
    resolved = running.first("resolved", "client")
    assert resolved.details[0] == "service"
    assert resolved.details[1].endswith(f":{port}"), resolved.details
    assert resolved.details[2] == "ready"
