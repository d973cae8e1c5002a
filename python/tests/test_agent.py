"""The agent API without a supervisor: a clear error outside one, the
standalone mode, RESOLVE from the environment, and SIGTERM setting
`shutdown_requested` in a real process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisor_sdk import (
    Agent,
    AgentSettings,
    InvalidVariableError,
    NotFoundError,
    NotSupervisedError,
    Severity,
)

REPO = Path(__file__).resolve().parents[2]


def test_from_env_outside_a_supervisor_names_the_missing_variable():
    with pytest.raises(NotSupervisedError) as raised:
        AgentSettings.from_env({"AGENT_NAME": "x", "AGENT_TOKEN": "t"})
    assert raised.value.variable == "SUPERVISOR_ENDPOINT"
    assert "Agent.standalone" in str(raised.value)
    with pytest.raises(NotSupervisedError) as raised:
        AgentSettings.from_env({"SUPERVISOR_ENDPOINT": "ipc:///x", "AGENT_NAME": "x"})
    assert raised.value.variable == "AGENT_TOKEN"


def test_settings_read_the_heartbeat_interval():
    base = {"SUPERVISOR_ENDPOINT": "ipc:///x", "AGENT_NAME": "x", "AGENT_TOKEN": "t"}
    assert AgentSettings.from_env(base).heartbeat_interval == 1.0
    assert AgentSettings.from_env({**base, "AGENT_HEARTBEAT_INTERVAL_MS": "250"}).heartbeat_interval == 0.25
    with pytest.raises(InvalidVariableError):
        AgentSettings.from_env({**base, "AGENT_HEARTBEAT_INTERVAL_MS": "soon"})
    with pytest.raises(InvalidVariableError):
        AgentSettings.from_env({**base, "AGENT_HEARTBEAT_INTERVAL_MS": "0"})


def test_standalone_calls_succeed(monkeypatch):
    monkeypatch.setenv("ECHO_SERVICE_ENDPOINT", "tcp://127.0.0.1:7200")
    monkeypatch.setenv("AGENT_DEPENDENCIES", '{"db": "tcp://127.0.0.1:5432"}')
    agent = Agent.standalone("demo", handle_signals=False)
    assert not agent.is_supervised
    agent.ready()
    agent.progress(queue_depth=1, in_flight=0, model="v3")
    assert agent.report_error("x", Severity.WARNING, kind="k", context={"obj": object()})
    assert agent.resolve("echo-service").endpoint == "tcp://127.0.0.1:7200"
    assert agent.resolve("db").endpoint == "tcp://127.0.0.1:5432"
    with pytest.raises(NotFoundError):
        agent.resolve("ghost")
    assert agent.link_stats() is None
    agent.close()


def test_sigterm_sets_shutdown_requested():
    script = (
        "import sys, time\n"
        "from supervisor_sdk import Agent\n"
        "agent = Agent.standalone('demo')\n"
        "print('waiting', flush=True)\n"
        "print('requested' if agent.wait_for_shutdown(20) else 'timeout', flush=True)\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=environment
    )
    try:
        assert process.stdout.readline().strip() == "waiting"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.stdout.readline().strip() == "requested"
        assert process.wait(10) == 0
        assert time.monotonic() - started < 5
    finally:
        process.kill()
        process.wait()


def test_heartbeats_fall_on_whole_multiples_of_the_interval():
    from supervisor_sdk._link import until_next_beat

    assert until_next_beat(1.0, 1_700_000_000.25) == pytest.approx(0.75)
    assert until_next_beat(1.0, 1_700_000_000.0) == pytest.approx(1.0)
    assert until_next_beat(0.3, 1.0) == pytest.approx(0.2)
    assert 0 < until_next_beat(0.0, 5.0) <= 0.001
