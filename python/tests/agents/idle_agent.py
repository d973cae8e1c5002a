"""A Python SDK agent for the `idle_stop` integration test (tests/it/idle.rs).

    --role lazy      READY, then reports no work (`agent.idle()`) and waits
                     for SIGTERM: with `idle_stop` it is stopped as idle.
    --role caller    READY, then waits for the file --trigger; then resolves
                     --target every 50 ms until it is `ready` (at most 30 s),
                     appending each answered state to --out (one line each,
                     `done` last), and waits for SIGTERM.
"""

import argparse
import os
import time

from supervisor_sdk import Agent

parser = argparse.ArgumentParser()
parser.add_argument("--role", choices=["lazy", "caller"], required=True)
parser.add_argument("--trigger")
parser.add_argument("--target")
parser.add_argument("--out")
args = parser.parse_args()

agent = Agent.from_env()
agent.ready()

if args.role == "lazy":
    agent.idle()
else:
    while not os.path.exists(args.trigger):
        if agent.wait_for_shutdown(0.05):
            agent.close()
            raise SystemExit(0)
    deadline = time.monotonic() + 30
    with open(args.out, "a") as out:
        while time.monotonic() < deadline:
            found = agent.resolve(args.target)
            out.write(f"{found.state}\n")
            out.flush()
            if found.state == "ready":
                break
            time.sleep(0.05)
        out.write("done\n")

agent.wait_for_shutdown()
agent.close()
