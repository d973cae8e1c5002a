"""A Python agent for the pytest suite, built on supervisor_sdk; flags choose
its behaviour. Appends `kind name unix_nanos pid` lines to $AGENT_RECORD
(`start`, `ready`, `stop`), one O_APPEND write each.

    --ready-after S    seconds before calling ready()
    --hang MODE        after ready: `gil` (a C call holding the GIL, so the
                       heartbeat thread stops too) or `deadlock` (the worker
                       thread deadlocks; heartbeats go on, progress stops)
    --work S           call progress() every S seconds (default: never)
    --errors N         report N errors (kind `test`, context index) and one
                       logging.error record after ready
    --resolve NAME     resolve NAME after ready and record `resolved NAME
                       endpoint state`
"""

import argparse
import ctypes
import logging
import os
import threading
import time

from supervisor_sdk import Agent, Severity

parser = argparse.ArgumentParser()
parser.add_argument("--ready-after", type=float, default=0.0)
parser.add_argument("--hang", choices=["gil", "deadlock"])
parser.add_argument("--work", type=float)
parser.add_argument("--errors", type=int, default=0)
parser.add_argument("--resolve")
args = parser.parse_args()


def record(kind, *details):
    path = os.environ.get("AGENT_RECORD")
    if not path:
        return
    name = os.environ.get("AGENT_NAME", "?")
    line = " ".join([kind, name, str(time.time_ns()), str(os.getpid()), *map(str, details)]) + "\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


record("start")
agent = Agent.from_env()
if agent.wait_for_shutdown(args.ready_after):
    agent.close()
    raise SystemExit(0)
agent.ready()
record("ready")

for index in range(args.errors):
    agent.report_error(f"error {index}", Severity.ERROR, kind="test", context={"index": index})
if args.errors:
    logging.getLogger("worker").addHandler(agent.logging_handler(logging.ERROR))
    logging.getLogger("worker").error("logged failure")

if args.resolve:
    found = agent.resolve(args.resolve)
    record("resolved", args.resolve, found.endpoint, found.state)

if args.hang == "gil":
    # libc sleep() called through PyDLL keeps the GIL: every Python thread,
    # the heartbeat thread included, stops.
    ctypes.PyDLL(None).sleep(3600)
elif args.hang == "deadlock":
    lock = threading.Lock()

    def worker():
        agent.progress()
        with lock:
            with lock:  # never acquired: the worker is stuck for good
                pass

    threading.Thread(target=worker, daemon=True).start()

while not agent.wait_for_shutdown(args.work or 0.2):
    if args.work and args.hang != "deadlock":
        agent.progress(queue_depth=0)
record("stop")
agent.close()
