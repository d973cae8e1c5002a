"""Example agent `reporter`: an optional agent that only depends on `store`
and prints the hit counter now and then. Standard library only.
"""
import os
import signal
import socket
import sys
import time

STORE = os.environ.get("STORE_ENDPOINT", "tcp://127.0.0.1:17200").removeprefix("tcp://")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    host, port = STORE.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1) as connection:
            connection.sendall(b"GET hits\n")
            print("reporter: hits so far:", connection.makefile().readline().strip() or "0", flush=True)
    except OSError as error:
        print(f"reporter: store unavailable: {error}", flush=True)
    time.sleep(5)
