#!/usr/bin/env bash
# Measure one already-running HTTP server with wrk: throughput and the
# server's own CPU time per request, for keep-alive, Connection: close and
# pipelined (16-deep) requests.
#
#   taskset -c 0 SERVER ... &                 # caller pins the server to core 0
#   benches/wrk/run.sh PID http://127.0.0.1:8080/plaintext
#
# wrk is pinned to core 1 so client and server never share a core; the
# server's CPU is utime+stime of PID (all its threads) from /proc/PID/stat,
# read before and after each run. Resolution is one clock tick (10 ms at
# CLK_TCK=100), so keep DURATION at several seconds.
#
# Env: DURATION (wrk -d, default 10s), CONNECTIONS (wrk -c, default 50),
#      PIPELINE_DEPTH (default 16), WRK (wrk binary, default wrk),
#      MODES (subset of "keepalive close pipeline", default all three).
# Columns: srv_cpu% / wrk_cpu% are CPU seconds over the wall time wrk
# reports; wrk_cpu% near 100 means the client, not the server, is the limit.
# other% is the CPU the rest of the host used meanwhile (all cores, from
# /proc/stat): anything well above a few % means the run shared its cores
# (e.g. with a build) and its figures are not clean.
# errors = non-2xx/3xx responses + socket errors (connect/read/write/timeout).
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 PID URL  (e.g. $0 1234 http://127.0.0.1:8080/plaintext)" >&2; exit 2; }
pid=$1 url=$2
# Only loopback may be loaded from this script.
[[ $url =~ ^http://(127\.[0-9.]+|localhost|\[::1\])(:[0-9]+)?/ ]] || { echo "refusing non-loopback URL: $url" >&2; exit 2; }
[[ -r /proc/$pid/stat ]] || { echo "no such process: $pid" >&2; exit 2; }

duration=${DURATION:-10s}
conns=${CONNECTIONS:-50}
depth=${PIPELINE_DEPTH:-16}
wrk=${WRK:-wrk}
modes=" ${MODES:-keepalive close pipeline} "
here=$(cd "$(dirname "$0")" && pwd)
hz=$(getconf CLK_TCK)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# utime+stime in clock ticks: fields 14 and 15. comm (field 2) may contain
# spaces, so drop everything up to the last ')' first (then they are 12, 13).
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat"; }
# Host-wide busy clock ticks, all CPUs: user+nice+system+irq+softirq+steal
# (guest time is already inside user).
host_busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
# TIME_WAIT sockets host-wide ("TCP: inuse .. tw N ..").
time_wait() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "tw") print $(i + 1) }' /proc/net/sockstat; }

# run MODE [wrk args...]: one wrk run bounded by -d, raw output echoed, one
# table row appended to $tmp/rows.
run() {
  local mode=$1; shift
  local before after host_before host_after TIMEFORMAT='%U %S'   # bash `time` -> wrk's own CPU
  host_before=$(host_busy)
  before=$(cpu_ticks)
  # URL before the extra args: wrk passes whatever follows `--` to the script.
  { time taskset -c 1 "$wrk" -t1 -c"$conns" -d"$duration" "$url" "$@" >"$tmp/$mode.out" 2>&1; } 2>"$tmp/$mode.time" ||
    { cat "$tmp/$mode.out" >&2; echo "wrk failed in mode $mode" >&2; exit 1; }
  after=$(cpu_ticks)
  host_after=$(host_busy)
  echo "--- $mode: taskset -c 1 $wrk -t1 -c$conns -d$duration $url ${*@Q}"
  cat "$tmp/$mode.out"
  kill -0 "$pid" 2>/dev/null || { echo "server $pid died during $mode" >&2; exit 1; }
  awk -v mode="$mode" -v ticks=$((after - before)) -v hz="$hz" -v wt="$(cat "$tmp/$mode.time")" \
    -v host=$((host_after - host_before)) '
    / requests in / {                      # "  N requests in 10.00s, X MB read"
      n = $1; secs = $4 + 0
      if ($4 ~ /ms,$/) secs /= 1000; else if ($4 ~ /m,$/) secs *= 60
    }
    /^Requests\/sec:/ { rps = $2 }
    /^  Non-2xx or 3xx responses:/ { errs += $NF }
    /^  Socket errors:/ { gsub(/,/, ""); errs += $4 + $6 + $8 + $10 }  # connect read write timeout
    END {
      split(wt, t, " "); cpu = ticks / hz; wcpu = t[1] + t[2]
      other = host / hz - cpu - wcpu; if (other < 0) other = 0
      printf "%-10s %10d %10.0f %8.2f %8.2f %8.0f%% %8.0f%% %6.0f%% %7d\n", mode, n, rps, cpu,
        (n ? cpu * 1e6 / n : 0), 100 * cpu / secs, 100 * wcpu / secs, 100 * other / secs, errs
    }' "$tmp/$mode.out" >>"$tmp/rows"
}

echo "server pid $pid ($(cat /proc/$pid/comm)), url $url, duration $duration, $conns connections, CLK_TCK $hz"
[[ $modes == *" keepalive "* ]] && run keepalive
tw_before=$(time_wait)
[[ $modes == *" close "* ]] && run close -H 'Connection: close'
tw_after=$(time_wait)
[[ $modes == *" pipeline "* ]] && run "pipeline$depth" -s "$here/pipeline.lua" -- "$depth"

echo
printf "%-10s %10s %10s %8s %8s %9s %9s %7s %7s\n" mode requests req/s cpu_s us/req srv_cpu% wrk_cpu% other% errors
cat "$tmp/rows"
[[ $modes == *" close "* ]] &&
  echo "close mode TIME_WAIT (host-wide, /proc/net/sockstat): before $tw_before, after $tw_after"
exit 0
