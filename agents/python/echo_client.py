#!/usr/bin/env python3
"""Example agent `echo-client` (Python): finds `echo-service` through the
supervisor (`resolve`), then calls it every $CALL_INTERVAL seconds through
the SDK's socket pool with lazy-pirate retries. A failed call is reported
as an error and the service is resolved again (it may have moved after a
restart). Ready once the first call succeeds. Exits cleanly on SIGTERM.
"""

import logging
import os

from supervisor_sdk import Agent, NotFoundError, RequestTimeoutError, Severity

logging.basicConfig(level=logging.INFO, format="echo-client: %(message)s")
agent = Agent.from_env_or_standalone("echo-client")
interval = float(os.environ.get("CALL_INTERVAL", "1"))
endpoint = None
calls = failures = 0
ready = False

while not agent.shutdown_requested.is_set():
    try:
        if endpoint is None:
            endpoint = agent.resolve("echo-service").endpoint
        reply = agent.pool.request(endpoint, f"call {calls}", timeout=1.0, retries=2)
        calls += 1
        agent.progress(queue_depth=0, calls=calls, failures=failures)
        if not ready:
            agent.ready()
            ready = True
            logging.info("first reply: %s", reply.decode())
    except (NotFoundError, RequestTimeoutError) as error:
        failures += 1
        endpoint = None  # resolve again: it may have restarted elsewhere
        agent.report_error(str(error), Severity.WARNING, kind="echo", context={"failures": failures})
    agent.wait_for_shutdown(interval)
logging.info("stopping after %d calls (%d failures)", calls, failures)
agent.close()
