"""Example agent `store`: a tiny line-based key/value store over TCP.

Listens on 127.0.0.1:$AGENT_PORT after a short warm-up (so the supervisor's
tcp readiness probe has something to wait for). Commands, one per line:
`GET key`, `SET key value`, `INCR key`; each answers one line.
Standard library only.
"""
import os
import signal
import socketserver
import sys
import time

DATA = {}


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for raw in self.rfile:
            parts = raw.decode().split()
            if not parts:
                continue
            command, args = parts[0].upper(), parts[1:]
            if command == "GET" and len(args) == 1:
                answer = DATA.get(args[0], "")
            elif command == "SET" and len(args) == 2:
                DATA[args[0]] = args[1]
                answer = "OK"
            elif command == "INCR" and len(args) == 1:
                DATA[args[0]] = str(int(DATA.get(args[0], "0")) + 1)
                answer = DATA[args[0]]
            else:
                answer = "ERR unknown command"
            self.wfile.write((answer + "\n").encode())


def main():
    port = int(os.environ.get("AGENT_PORT", "17200"))
    print(f"store: warming up (port {port})", flush=True)
    time.sleep(0.5)
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: (print("store: stopping", flush=True), sys.exit(0)))
    print(f"store: listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
