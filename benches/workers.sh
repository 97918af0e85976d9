#!/usr/bin/env bash
# `tether serve --workers 2` against `--workers 1`, in alternating runs on the same machine
# (docs/results.md, "Several workers on one port"):
#
#   cargo build --release
#   benches/workers.sh fanout      # one publish to CLIENTS held polls (bench longpoll --messages 1)
#   benches/workers.sh idle        # server RSS per idle keep-alive connection (bench idle)
#   benches/workers.sh keepalive   # server CPU per keep-alive request (benches/wrk/run.sh)
#
# Every run gets a freshly started server on a port of its own, then waits GAP seconds (for
# the TIME_WAIT sockets of the run before to expire) and until the host is quiet: two 5-second
# samples of /proc/stat in a row below QUIET % of a core busy. A host that stays busy for
# MAX_WAIT seconds is measured anyway; its row says how busy it was (`before%`), and every
# row says the rest of the host's load during the run (`other%`, as in run.sh), so runs that
# shared the machine can be told apart and left out.
#
# Env: ROUNDS (default 3; each round runs workers=1 then workers=2), CLIENTS (fan-out and
#      idle, default 15000), GAP (default 65), QUIET (default 5), MAX_WAIT (default 900),
#      PORT (the first run's port, default 18700; each run takes the next),
#      PIN: where the processes run (default none):
#        none    nothing pinned: the scheduler places the server's threads and the generator;
#        lab     the generator (the lab, or wrk) on core 1, the server free to use both cores;
#        server0 the server on core 0 (both workers share it), the generator on core 1;
#      NICE: the lab's niceness (fan-out and idle; default 0). At 19 the server's threads run
#        first whenever they want a core, and the lab reads what they wrote when they wait;
#      OUT (the directory for each run's raw output, default a new temporary one).
#      DURATION (keepalive: wrk's -d, default 10s).
# keepalive mode always has wrk on core 1 (run.sh pins it), so PIN is none/lab or server0.
#
# Prints one line per run; the raw JSON (and wrk's output) stay in OUT. Columns: before% the
# host's busy share in the last quiet sample; other% the rest of the host over the whole run
# (fanout, idle: busy time less the server's and the lab's; keepalive: run.sh's); sched_oth
# the lab's own `other load`, over the publish schedule only (a few hundred ms: a tick or two
# makes 5-10 %); last_ms and p50_ms the client's latency from the publish (max and median);
# fanout_ms the server's polls.last_fanout_us (with several workers the slowest worker's, from
# when it learned of the publish); B/poll and B/conn the server's RSS growth per held poll or
# idle connection; us/msg and us/req the server's CPU per delivery or request; accepted per
# worker from /stats after the run (each follower and each idle connection is one accept).
set -euo pipefail

mode=${1:-}
[[ $mode =~ ^(fanout|idle|keepalive)$ ]] || { echo "usage: $0 fanout|idle|keepalive" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
tether=${TETHER:-$here/../target/release/tether}
rounds=${ROUNDS:-3} clients=${CLIENTS:-15000} gap=${GAP:-65} quiet=${QUIET:-5}
max_wait=${MAX_WAIT:-900} port=${PORT:-18700} pin=${PIN:-none} niceness=${NICE:-0}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
[[ -x $tether ]] || { echo "no $tether: cargo build --release first" >&2; exit 2; }
hz=$(getconf CLK_TCK)

case $pin in
  none) server_pin=() lab_run=() ;;
  lab) server_pin=() lab_run=(taskset -c 1) ;;
  server0) server_pin=(taskset -c 0) lab_run=(taskset -c 1) ;;
  *) echo "PIN must be none, lab or server0" >&2; exit 2 ;;
esac
lab_run=(nice -n "$niceness" "${lab_run[@]}")
setup=$pin
(( niceness == 0 )) || setup+=",n$niceness"

# Host-wide busy ticks of all CPUs (as run.sh), a process's utime+stime, TIME_WAIT sockets.
host_busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
time_wait() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "tw") print $(i + 1) }' /proc/net/sockstat; }

# The host's busy share of one core over 5 s, in %.
busy_percent() {
  local before
  before=$(host_busy)
  sleep 5
  echo $(( ($(host_busy) - before) * 100 / (5 * hz) ))
}

# Waits until two samples in a row are below QUIET %, at most MAX_WAIT s; prints the last.
wait_quiet() {
  local waited=0 streak=0 busy=0
  while (( waited < max_wait )); do
    busy=$(busy_percent); waited=$((waited + 5))
    if (( busy < quiet )); then streak=$((streak + 1)); else streak=0; fi
    (( streak >= 2 )) && break
  done
  echo "$busy"
}

server_pid=
stop_server() {
  [[ -n $server_pid ]] || return 0
  kill "$server_pid" 2>/dev/null || true
  # A graceful stop drains for at most --drain-timeout (5 s by default).
  for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}
trap stop_server EXIT

# start_server WORKERS PORT: a fresh server, answering /stats before this returns.
start_server() {
  local extra=()
  [[ $mode == fanout ]] || extra=(--idle-timeout 300s --max-requests 1000000)
  "${server_pin[@]}" "$tether" serve --listen "127.0.0.1:$2" --workers "$1" "${extra[@]}" \
    >"$out/server-$2.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 50); do
    curl -fs --max-time 1 "http://127.0.0.1:$2/stats" >/dev/null && return 0
    sleep 0.1
  done
  echo "the server on port $2 did not answer" >&2; exit 1
}

# Each worker's accepted connections, from /stats: "a/b" (or "a" with one worker).
accepted_split() {
  curl -fs --max-time 5 "http://127.0.0.1:$1/stats" |
    jq -r 'if .workers then [.workers[].accepted | tostring] | join("/") else .totals.accepted | tostring end'
}

case $mode in
  fanout) printf '%-8s %-3s %-9s %8s %7s %9s %6s %10s %8s %8s %9s %7s %7s %s\n' utc w pin before% other% \
    sched_oth tw delivered last_ms p50_ms fanout_ms B/poll us/msg "accepted per worker" ;;
  idle) printf '%-8s %-3s %-9s %8s %7s %6s %6s %9s %8s %s\n' utc w pin before% other% tw idle B/conn slab/conn \
    "accepted per worker" ;;
  keepalive) printf '%-8s %-3s %-9s %8s %7s %10s %8s %9s %9s %s\n' utc w pin before% other% req/s us/req srv_cpu% \
    wrk_cpu% "accepted per worker" ;;
esac

first=1
for round in $(seq "$rounds"); do
  for workers in 1 2; do
    (( first )) || sleep "$gap"
    first=0
    before=$(wait_quiet)
    port=$((port + 1))
    start_server "$workers" "$port"
    name="$mode-r$round-w$workers-$pin-nice$niceness"
    utc=$(date -u +%H:%M:%S)
    tw=$(time_wait)
    case $mode in
      fanout | idle)
        host_before=$(host_busy) srv_before=$(cpu_ticks "$server_pid")
        TIMEFORMAT='%R %U %S'
        if [[ $mode == fanout ]]; then
          { time "${lab_run[@]}" "$tether" bench longpoll --url "http://127.0.0.1:$port" --server-pid "$server_pid" \
              --clients "$clients" --messages 1 --json >"$out/$name.json" 2>"$out/$name.err"; } 2>"$out/$name.time"
        else
          { time "${lab_run[@]}" "$tether" bench idle --url "http://127.0.0.1:$port/plaintext" \
              --server-pid "$server_pid" --connections "$clients" --json >"$out/$name.json" 2>"$out/$name.err"; } \
            2>"$out/$name.time"
        fi
        # The rest of the host over the whole lab run, in % of a core: the host's busy time less
        # the server's and the lab's (bash's `time`), over the lab's wall time.
        other=$(awk -v host=$(($(host_busy) - host_before)) -v srv=$(($(cpu_ticks "$server_pid") - srv_before)) \
          -v hz="$hz" '{ o = host / hz - srv / hz - $2 - $3; printf "%.1f", 100 * (o < 0 ? 0 : o) / $1 }' \
          "$out/$name.time")
        split=$(accepted_split "$port")
        ;;&
      fanout)
        jq -r --arg utc "$utc" --arg w "$workers" --arg pin "$setup" --arg before "$before" --arg tw "$tw" \
          --arg split "$split" --arg other "$other" '
          "\($utc) \($w) \($pin) \($before) \($other) \($tw) \(.delivered)/\(.clients) \(.latency_us.max / 1000 * 10 | round / 10)" +
          " \(.latency_us.p50 / 1000 * 10 | round / 10) \(.server.last_fanout_us / 1000 * 10 | round / 10)" +
          " \(.server.user_bytes_per_held_poll) \(.server.cpu_us_per_message) \(.server.other_cpu_percent) \($split)"' \
          "$out/$name.json" |
          awk '{ printf "%-8s %-3s %-9s %7s%% %6s%% %8s%% %6s %10s %8s %8s %9s %7s %7s %s\n",
                 $1, $2, $3, $4, $5, $13, $6, $7, $8, $9, $10, $11, $12, $14 }'
        ;;
      idle)
        jq -r --arg utc "$utc" --arg w "$workers" --arg pin "$setup" --arg before "$before" --arg tw "$tw" \
          --arg split "$split" --arg other "$other" '
          "\($utc) \($w) \($pin) \($before) \($other) \($tw) \(.idle) " +
          "\(.figures.server_rss.per_connection) \(.figures.kernel_slab.per_connection) \($split)"' "$out/$name.json" |
          awk '{ printf "%-8s %-3s %-9s %7s%% %6.1f%% %6s %6s %9s %8s %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }'
        ;;
      keepalive)
        DURATION=${DURATION:-10s} MODES=keepalive "$here/wrk/run.sh" "$server_pid" "http://127.0.0.1:$port/plaintext" \
          >"$out/$name.txt"
        split=$(accepted_split "$port")
        awk -v utc="$utc" -v w="$workers" -v pin="$setup" -v before="$before" -v accepted="$split" '
          $1 == "keepalive" && NF == 9 { printf "%-8s %-3s %-9s %7s%% %7s %10s %8s %9s %9s %s\n",
            utc, w, pin, before, $8, $3, $5, $6, $7, accepted }' "$out/$name.txt"
        ;;
    esac
    stop_server
  done
done
echo "raw output: $out" >&2
