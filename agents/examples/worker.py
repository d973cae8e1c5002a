"""Example agent `worker`: does a unit of work every few seconds by calling
the `api` agent (API_ENDPOINT, injected by the supervisor) and printing the
answer. Has no readiness probe: it is ready once it has run for its
start period. Standard library only.
"""
import os
import signal
import sys
import time
import urllib.request

API = os.environ.get("API_ENDPOINT", "tcp://127.0.0.1:17210").replace("tcp://", "http://")
INTERVAL = float(os.environ.get("WORK_INTERVAL", "3"))

signal.signal(signal.SIGTERM, lambda *_: (print("worker: stopping", flush=True), sys.exit(0)))
print(f"worker: calling {API}/ every {INTERVAL}s", flush=True)
while True:
    try:
        with urllib.request.urlopen(API + "/", timeout=2) as response:
            print("worker:", response.read().decode().strip(), flush=True)
    except OSError as error:
        print(f"worker: api unavailable: {error}", flush=True)
    time.sleep(INTERVAL)
