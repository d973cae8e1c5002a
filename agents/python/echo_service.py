#!/usr/bin/env python3
"""Example agent `echo-service` (Python): a ZeroMQ REP service on
tcp://127.0.0.1:$AGENT_PORT answering every request with `echo:<request>`.
Reports READY once bound (`readiness: sdk`), progress after every request,
errors to the supervisor's error bus, and exits cleanly on SIGTERM.
Standard library + supervisor_sdk (`pip install ./python`).
"""

import logging
import os
import sys

import zmq

from supervisor_sdk import Agent, Severity

logging.basicConfig(level=logging.INFO, format="echo-service: %(message)s")
agent = Agent.from_env_or_standalone("echo-service")
# Errors logged anywhere in the agent also reach the error bus.
logging.getLogger().addHandler(agent.logging_handler(logging.ERROR))

port = int(os.environ.get("AGENT_PORT", "7200"))
socket = zmq.Context.instance().socket(zmq.REP)
socket.setsockopt(zmq.LINGER, 0)
try:
    socket.bind(f"tcp://127.0.0.1:{port}")
except zmq.ZMQError as error:
    agent.report_error(f"cannot bind port {port}: {error}", Severity.FATAL, kind="bind")
    agent.close()
    sys.exit(2)

agent.ready(endpoint=f"tcp://127.0.0.1:{port}")
logging.info("serving on port %d", port)
served = 0
while not agent.shutdown_requested.is_set():
    # A short poll so SIGTERM is noticed promptly.
    if not socket.poll(100):
        continue
    request = socket.recv()
    socket.send(b"echo:" + request)
    served += 1
    agent.progress(in_flight=0, served=served)
logging.info("stopping after %d requests", served)
socket.close()
agent.close()
