#!/usr/bin/env python3
"""Example agent `batch-worker` (Python): a worker thread processes jobs from
an in-memory queue and reports progress after each one, so the supervisor's
`heartbeat.progress_timeout` restarts it if the worker ever stalls while the
process (and its heartbeat thread) lives on. Set JOB_SECONDS to tune the
work; STALL_AFTER=N makes the worker deadlock after N jobs, to watch that
restart happen. Exits cleanly on SIGTERM, finishing the job in hand.
"""

import logging
import os
import queue
import threading
import time

from supervisor_sdk import Agent, Severity

logging.basicConfig(level=logging.INFO, format="batch-worker: %(message)s")
agent = Agent.from_env_or_standalone("batch-worker")
logging.getLogger().addHandler(agent.logging_handler(logging.WARNING))
job_seconds = float(os.environ.get("JOB_SECONDS", "0.5"))
stall_after = int(os.environ.get("STALL_AFTER", "0"))
jobs: "queue.Queue[int]" = queue.Queue()


def work() -> None:
    done = 0
    while not agent.shutdown_requested.is_set():
        try:
            job = jobs.get(timeout=0.2)
        except queue.Empty:
            continue
        time.sleep(job_seconds)  # the "work"
        done += 1
        agent.progress(queue_depth=jobs.qsize(), in_flight=0, done=done)
        if done % 10 == 0:
            logging.info("%d jobs done", done)
        if stall_after and done == stall_after:
            logging.warning("stalling on purpose after %d jobs", done)
            lock = threading.Lock()
            with lock:
                lock.acquire()  # deadlock: progress stops, heartbeats do not


threading.Thread(target=work, name="worker", daemon=True).start()
agent.ready()
next_job = 0
while not agent.wait_for_shutdown(job_seconds):
    if jobs.qsize() < 5:
        jobs.put(next_job)
        next_job += 1
if jobs.qsize():
    agent.report_error("stopping with jobs queued", Severity.INFO, kind="shutdown", context={"queued": jobs.qsize()})
agent.close()
