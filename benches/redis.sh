#!/usr/bin/env bash
# Topics in Redis (`tether serve --redis`, docs/scale-out.md), measured on this machine:
#
#   latency  publish-to-delivery latency of `tether bench longpoll` with CLIENTS long-poll
#            followers, in three set-ups, in rotating order, ROUNDS rounds:
#              memory  one tether, the topics in its memory (the baseline)
#              redis1  one tether with --redis
#              redis2  two tethers with --redis on one Redis, the followers spread over both
#                      (--also-url), every publish to the first
#   publish  publishes per second through one tether: wrk POSTs /publish/flood from
#            CONNECTIONS connections for DURATION, to a tether with --redis and to one with
#            the topics in memory, alternating, ROUNDS rounds; the CPU time of tether and of
#            redis-server per publish
#
#   cargo build --release && benches/redis.sh          # both parts
#   PART=publish benches/redis.sh                      # one part (latency or publish)
#
# Pinning (2 cores): every tether on core 0; the load (tether bench, wrk) and redis-server on
# core 1. Every run has a fresh tether, and a fresh redis-server in a fresh directory
# (appendonly yes, appendfsync FSYNC, no snapshots), so no run inherits another's log.
#
# Env: PART (latency publish), ROUNDS (3), CLIENTS (1000), MESSAGES (50), INTERVAL (100ms),
#      CONNECTIONS ("64 256"), DURATION (10s), FSYNC (always; or everysec), PORT (18500: the
#      tethers listen on PORT+1 and PORT+2), REDIS_PORT (16500), OUT (where each run's output
#      is kept; default a fresh temporary directory), TETHER (the binary), QUIET_WAIT (300:
#      before each run, the seconds it may wait for the host to be quiet, below 5 % of a core).
# Needs redis-server and redis-cli, wrk, jq, curl, taskset.
# other% is the CPU the rest of the host used during the run (/proc/stat), in per cent of one
# core, beside tether, redis-server and the load: more than a few per cent means the run shared
# the machine and its figures are not clean; rerun it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tether=${TETHER:-$here/../target/release/tether}
part=" ${PART:-latency publish} "
rounds=${ROUNDS:-3}
clients=${CLIENTS:-1000} messages=${MESSAGES:-50} interval=${INTERVAL:-100ms}
connections=${CONNECTIONS:-64 256} duration=${DURATION:-10s}
fsync=${FSYNC:-always}
port=${PORT:-18500} redis_port=${REDIS_PORT:-16500}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
hz=$(getconf CLK_TCK)
started=()
redis_pid='' redis_dir=''

stop_all() {
  local pid
  for pid in "${started[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  started=()
  [[ -n $redis_dir ]] && rm -rf "$redis_dir"
  redis_pid='' redis_dir=''
}
trap stop_all EXIT

# until WHAT CMD...: runs CMD every 0.1 s until it succeeds, for at most 20 s.
until_ok() {
  local what=$1 i; shift
  for i in $(seq 200); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "gave up waiting for $what" >&2
  exit 1
}

start_redis() {
  redis_dir=$(mktemp -d)
  taskset -c 1 redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly yes \
    --appendfsync "$fsync" --latency-monitor-threshold 1 --dir "$redis_dir" >"$out/redis-$1.log" 2>&1 &
  redis_pid=$!
  started+=("$redis_pid")
  until_ok "redis-server on $redis_port" redis-cli -p "$redis_port" ping
}

# start_tether PORT LABEL [serve options...]: a fresh tether on core 0, in step with Redis if it
# has one.
start_tether() {
  local listen=127.0.0.1:$1 label=$2; shift 2
  taskset -c 0 "$tether" serve --listen "$listen" --max-requests 1000000 "$@" >"$out/tether-$label-${listen#*:}.log" 2>&1 &
  started+=($!)
  until_ok "tether on $listen" sh -c "curl -sf http://$listen/stats | jq -e '.backplane.redis == 0 or .backplane.up == 1'"
}

# Waits until the host is quiet: below 5 % of a core busy over two seconds, twice in a row, for
# at most QUIET_WAIT seconds (300); then goes on anyway and says so (the run's other% tells).
wait_quiet() {
  local deadline=$((SECONDS + ${QUIET_WAIT:-300})) calm=0 a b
  while ((calm < 2)); do
    a=$(host_busy); sleep 2; b=$(host_busy)
    if (((b - a) * 100 / hz / 2 < 5)); then calm=$((calm + 1)); else calm=0; fi
    if ((SECONDS >= deadline)); then echo "# the host was still busy after ${QUIET_WAIT:-300} s: running anyway" >&2; return; fi
  done
}

# The longest fsync of the append-only file redis-server saw, in ms (its latency monitor, which
# records events of 1 ms and more: 0 is below 1 ms), or - without Redis.
fsync_max() {
  [[ -n $redis_pid ]] || { echo -; return; }
  redis-cli -p "$redis_port" --raw latency latest | paste - - - - |
    awk '$1 ~ /^aof-fsync/ { max = $4 > max ? $4 : max } END { print max + 0 }'
}

ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
host_busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
now() { date -u +%H:%M:%S; }

# latency SETUP ROUND: one `tether bench longpoll` run, its JSON kept, one row printed.
latency() {
  local setup=$1 round=$2 a=$((port + 1)) b=$((port + 2)) redis=redis://127.0.0.1:$redis_port
  local args=(--url "http://127.0.0.1:$a" --clients "$clients" --messages "$messages" --interval "$interval" --json)
  case $setup in
    memory) start_tether "$a" "$setup-$round"; args+=(--server-pid "${started[0]}") ;;
    redis1) start_redis "$setup-$round"; start_tether "$a" "$setup-$round" --redis "$redis"
            args+=(--server-pid "${started[1]}" --server-pid "$redis_pid") ;;
    redis2) start_redis "$setup-$round"; start_tether "$a" "$setup-$round" --redis "$redis"
            start_tether "$b" "$setup-$round" --redis "$redis"
            args+=(--also-url "http://127.0.0.1:$b" --server-pid "${started[1]}" --server-pid "${started[2]}" --server-pid "$redis_pid") ;;
  esac
  local json=$out/latency-$setup-$round.json at
  wait_quiet
  at=$(now)
  echo "# $at taskset -c 1 $tether bench longpoll ${args[*]}" >"$out/latency-$setup-$round.cmd"
  taskset -c 1 "$tether" bench longpoll "${args[@]}" >"$json"
  local fsync_ms
  fsync_ms=$(fsync_max)
  stop_all
  jq -r --arg setup "$setup" --arg round "$round" --arg at "$at" --arg fsync "$fsync_ms" \
    '[$round, $at, $setup, "\(.delivered)/\(.clients * .messages)", .errors, .latency_us.p50, .latency_us.p99,
      .latency_us.max, .server.last_fanout_us, .server.cpu_us_per_message, .server.other_cpu_percent, $fsync] | @tsv' "$json" |
    tee -a "$out/latency.tsv"
}

# publish SETUP CONNS ROUND: one wrk run of DURATION, its output kept, one row printed.
publish() {
  local setup=$1 conns=$2 round=$3 a=$((port + 1)) pids=() before=() i
  case $setup in
    memory) start_tether "$a" "$setup-$conns-$round"; pids=("${started[0]}") ;;
    redis) start_redis "$setup-$conns-$round"; start_tether "$a" "$setup-$conns-$round" --redis "redis://127.0.0.1:$redis_port"
           pids=("${started[1]}" "$redis_pid") ;;
  esac
  local url=http://127.0.0.1:$a/publish/flood at TIMEFORMAT='%U %S' wrk_cpu host_before host_after
  local raw=$out/publish-$setup-$conns-$round.txt
  wait_quiet
  at=$(now)
  for i in "${!pids[@]}"; do before[i]=$(ticks "${pids[i]}"); done
  host_before=$(host_busy)
  { time taskset -c 1 wrk -t1 -c"$conns" -d"$duration" -s "$here/wrk/publish.lua" "$url" >"$raw"; } 2>"$raw.time"
  host_after=$(host_busy)
  local used=() acked=''
  for i in "${!pids[@]}"; do used[i]=$(($(ticks "${pids[i]}") - before[i])); done
  [[ $setup == redis ]] && acked=$(curl -sf "http://127.0.0.1:$a/stats" | jq .backplane.acked)
  echo "# $at taskset -c 1 wrk -t1 -c$conns -d$duration -s $here/wrk/publish.lua $url" >>"$raw"
  local fsync_ms
  fsync_ms=$(fsync_max)
  stop_all
  wrk_cpu=$(awk '{ print $1 + $2 }' "$raw.time")
  awk -v round="$round" -v at="$at" -v setup="$setup" -v conns="$conns" -v hz="$hz" -v wrk_cpu="$wrk_cpu" \
    -v tether="${used[0]}" -v redis="${used[1]:-0}" -v host=$((host_after - host_before)) -v acked="$acked" -v fsync="$fsync_ms" '
    / requests in / { n = $1; secs = $4 + 0; if ($4 ~ /ms,$/) secs /= 1000; else if ($4 ~ /m,$/) secs *= 60 }
    /^Requests\/sec:/ { rps = $2 }
    /^    Latency/ { mean = $2; max = $4 }
    /^  Non-2xx or 3xx responses:/ { errs += $NF }
    /^  Socket errors:/ { gsub(/,/, ""); errs += $4 + $6 + $8 + $10 }
    END {
      other = host / hz - (tether + redis) / hz - wrk_cpu; if (other < 0) other = 0
      printf "%s\t%s\t%s\t%s\t%d\t%.0f\t%s\t%s\t%.2f\t%.2f\t%.0f\t%.0f\t%.0f\t%.1f\t%d\t%s\t%s\n", round, at, setup, conns,
        n, rps, mean, max, tether / hz * 1e6 / n, redis / hz * 1e6 / n, 100 * tether / hz / secs,
        100 * redis / hz / secs, 100 * wrk_cpu / secs, 100 * other / secs, errs, acked, fsync
    }' "$raw" | tee -a "$out/publish.tsv"
}

echo "tether at $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'), $(redis-server --version | cut -d' ' -f3), appendfsync $fsync; outputs in $out"
if [[ $part == *" latency "* ]]; then
  echo "latency: $clients followers, $messages messages, one every $interval (p50, p99, max, fan-out in µs; CPU µs per delivery: tethers and Redis)"
  printf 'round\tUTC\tsetup\tdelivered\terrors\tp50\tp99\tmax\tfanout\tcpu/dlv\tother%%\tfsync_ms\n' | tee "$out/latency.tsv"
  setups=(memory redis2 redis1)
  for round in $(seq "$rounds"); do
    for i in 0 1 2; do latency "${setups[(i + round - 1) % 3]}" "$round"; done
  done
  echo "added p99 (redis2 - memory, same round, µs):"
  awk -F'\t' 'NR > 1 { p99[$1, $3] = $7 } END { for (r = 1; (r, "memory") in p99; r++) printf "  round %d: %.1f\n", r, p99[r, "redis2"] - p99[r, "memory"] }' "$out/latency.tsv"
fi
if [[ $part == *" publish "* ]]; then
  echo "publish: wrk POST /publish/flood for $duration (publishes/s; CPU µs per publish and % of a core)"
  printf 'round\tUTC\tsetup\tconns\tpublishes\tper_s\tmean\tmax\ttether_us\tredis_us\ttether%%\tredis%%\twrk%%\tother%%\terrors\tacked\tfsync_ms\n' | tee "$out/publish.tsv"
  for round in $(seq "$rounds"); do
    for conns in $connections; do
      if ((round % 2)); then order=(redis memory); else order=(memory redis); fi
      for setup in "${order[@]}"; do publish "$setup" "$conns" "$round"; done
    done
  done
fi
