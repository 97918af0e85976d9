#!/usr/bin/env bash
# What the token check costs the server per request: a keep-alive GET /poll answered at once,
# against one server without --jwt-secret and one with it (the token in the query, as an
# EventSource sends it), in alternating rounds so that both see the same machine.
#
#   cargo build --release && benches/wrk/tokens.sh
#
# Both servers are pinned to core 0 and measured one at a time by run.sh (wrk on core 1).
# Env: ROUNDS (default 3), DURATION (default 5s), MODES (default "keepalive pipeline").
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tether=${TETHER:-$here/../../target/release/tether}
rounds=${ROUNDS:-3}
export DURATION=${DURATION:-5s} MODES=${MODES:-keepalive pipeline}
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
open=127.0.0.1:${PORT_OPEN:-8093} guarded=127.0.0.1:${PORT_GUARDED:-8094}
tmp=$(mktemp -d)

taskset -c 0 "$tether" serve --listen "$open" --max-requests 1000000 >"$tmp/open.log" 2>&1 &
open_pid=$!
TETHER_JWT_SECRET=$secret taskset -c 0 "$tether" serve --listen "$guarded" --max-requests 1000000 >"$tmp/guarded.log" 2>&1 &
guarded_pid=$!
trap 'kill $open_pid $guarded_pid 2>/dev/null; rm -rf "$tmp"' EXIT
sleep 0.5

token=$(TETHER_JWT_SECRET=$secret "$tether" token --subscribe t --publish t --lifetime 1h)
# One message on each, so that every poll with cursor=0 is answered at once.
"$tether" publish "http://$open/publish/t" "a message" >/dev/null
"$tether" publish --token "$token" "http://$guarded/publish/t" "a message" >/dev/null

for round in $(seq "$rounds"); do
  echo "=== round $round: without tokens"
  "$here/run.sh" "$open_pid" "http://$open/poll/t?cursor=0" | tail -n +2 | grep -E '^(mode|keepalive|pipeline)' | sed "s/^/open    /"
  echo "=== round $round: with --jwt-secret"
  "$here/run.sh" "$guarded_pid" "http://$guarded/poll/t?cursor=0&token=$token" | tail -n +2 | grep -E '^(mode|keepalive|pipeline)' | sed "s/^/guarded /"
done
