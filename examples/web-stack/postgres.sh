#!/bin/sh
# PostgreSQL as a supervised agent (examples/web-stack/stack.yaml): its data
# directory is <run-dir>/postgres (created by initdb on the first start), it
# listens on 127.0.0.1:$AGENT_PORT only (no Unix socket), and it runs in the
# foreground so the supervisor watches and stops it (SIGINT: fast shutdown).
#
# PostgreSQL refuses to run as root. When the supervisor runs as root, the
# server runs in a user namespace in which this process is an unprivileged
# user (the `postgres` account's uid, else `nobody`): on disk the files stay
# root's, inside the 0700 run directory, and nothing has to be chowned or
# opened up to another account.
set -eu
port="${AGENT_PORT:?AGENT_PORT is set by the supervisor from the manifest's port}"
run_dir="${SUPERVISOR_RUN_DIR:?SUPERVISOR_RUN_DIR is set by supervisor up}"
bin_dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin_dir" ]; then
  echo "postgres.sh: no PostgreSQL server under /usr/lib/postgresql/*/bin (apt-get install postgresql)" >&2
  exit 1
fi
data="$run_dir/postgres"

as_user=""
if [ "$(id -u)" -eq 0 ]; then
  uid=$(id -u postgres 2>/dev/null || id -u nobody)
  gid=$(id -g postgres 2>/dev/null || id -g nobody)
  as_user="unshare --user --map-user=$uid --map-group=$gid"
  if ! $as_user true 2>/dev/null; then
    echo "postgres.sh: running as root and cannot create a user namespace to drop root" \
      "(PostgreSQL refuses root); run the supervisor as an unprivileged user" >&2
    exit 1
  fi
fi

if [ ! -f "$data/PG_VERSION" ]; then
  echo "postgres.sh: initialising $data"
  rm -rf "$data"
  $as_user "$bin_dir/initdb" --pgdata="$data" --username=postgres --auth=trust \
    --encoding=UTF8 --no-sync >/dev/null
fi
exec $as_user "$bin_dir/postgres" -D "$data" -p "$port" \
  -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c log_min_messages=warning
