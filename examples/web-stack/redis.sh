#!/bin/sh
# Redis as a supervised agent (examples/web-stack/stack.yaml): its data
# directory is <run-dir>/redis (append-only file), it listens on
# 127.0.0.1:$AGENT_PORT only and stays in the foreground.
set -eu
port="${AGENT_PORT:?AGENT_PORT is set by the supervisor from the manifest's port}"
run_dir="${SUPERVISOR_RUN_DIR:?SUPERVISOR_RUN_DIR is set by supervisor up}"
data="$run_dir/redis"
mkdir -p "$data"
exec redis-server --port "$port" --bind 127.0.0.1 --dir "$data" \
  --appendonly yes --save "" --daemonize no --loglevel warning
