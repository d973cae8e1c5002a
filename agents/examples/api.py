"""Example agent `api`: an HTTP front end over the `store` agent.

Reads the store's address from STORE_ENDPOINT (injected by the supervisor for
its dependency), serves GET /health (200 when the store answers) and GET /
(increments and returns a hit counter) on 127.0.0.1:$AGENT_PORT.
Standard library only.
"""
import http.server
import os
import signal
import socket
import sys

STORE = os.environ.get("STORE_ENDPOINT", "tcp://127.0.0.1:17200").removeprefix("tcp://")


def store(command):
    host, port = STORE.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=1) as connection:
        connection.sendall((command + "\n").encode())
        return connection.makefile().readline().strip()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            body = "ok" if self.path == "/health" and store("GET ping") is not None else f"hits: {store('INCR hits')}"
            self.send_response(200)
        except OSError as error:
            body = f"store unavailable: {error}"
            self.send_response(503)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write((body + "\n").encode())

    def log_message(self, format, *args):
        pass


def main():
    port = int(os.environ.get("AGENT_PORT", "17210"))
    signal.signal(signal.SIGTERM, lambda *_: (print("api: stopping", flush=True), sys.exit(0)))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"api: serving http://127.0.0.1:{port}/ (store at {STORE})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
