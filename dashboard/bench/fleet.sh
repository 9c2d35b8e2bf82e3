#!/usr/bin/env bash
# The fleet benchmarks of the dashboard (issue #6) at 10,000 GPUs: `/api/v1/fleet` under load
# (Debian's wrk 4.x) and the fleet page in headless Chromium (Debian's chromium, driven by
# dashboard/bench/fleet_page.mjs over the DevTools protocol). Not a test: it prints figures.
#
#   CARGO_TARGET_DIR=/var/cache/gpufleet/target cargo build --release --bin gpufleet
#   bash dashboard/bench/fleet.sh [GPUFLEET_BINARY ...]
#
# Each binary given (default: the release build) serves `gpufleet dashboard --simulate --nodes
# 1429` (10,004 GPUs: per dozen nodes nine have 8 GPUs and three have 4) on 127.0.0.1:$PORT and
# is measured in turn, so an older build passed next to the new one gives side-by-side figures
# from one run on one machine. Per binary:
#   1. the document's size, plain and with `Accept-Encoding: gzip`;
#   2. wrk closed-loop (`-t2 -c8`, then `-c16`): every connection sends its next request as soon
#      as the last answer arrived, so req/s is what the server sustains; once with the
#      `Accept-Encoding: gzip` that browsers and `curl --compressed` send, once without;
#   3. wrk paced: 22 connections each waiting 20 ms between requests, about 1,050 req/s offered
#      (fewer if answers are slow), with gzip and without: the latency at the load the issue
#      states (1,000 req/s) rather than at the most that wrk and the server, sharing the
#      machine's cores, can push through;
#   4. the page: fleet_page.mjs, RUNS first visits (fresh profile each), milliseconds from
#      navigation start until the heatmap with every GPU is on screen and the page responsive.
#
# Environment: NODES (1429), PORT (18090), DURATION (15s), RUNS (3), CHROMIUM (/usr/bin/chromium).
# Needs wrk, curl, node and chromium (apt-get install wrk curl nodejs chromium). Bound in time:
# every wrk run lasts DURATION, every page load at most a minute, and the servers are stopped on
# exit. The machine's load average is printed before each binary: other work skews the figures.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
nodes="${NODES:-1429}"
port="${PORT:-18090}"
duration="${DURATION:-15s}"
runs="${RUNS:-3}"
export GPUFLEET_CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
url="http://127.0.0.1:${port}"
work="$(mktemp -d)"
server=""

stop() {
  if [[ -n "$server" ]] && kill -0 "$server" 2>/dev/null; then
    kill "$server"
    wait "$server" 2>/dev/null || true
  fi
  server=""
}
trap 'stop; rm -rf "$work"' EXIT

# wrk waits this long between a connection's requests (paced runs).
cat >"$work/pace.lua" <<'LUA'
function delay()
  return 20
end
LUA

if [[ $# -eq 0 ]]; then
  set -- "${CARGO_TARGET_DIR:-target}/release/gpufleet"
fi

summary=()

# One wrk run; prints its report and keeps "p50 p99 req/s" for the summary.
load() {
  local label="$1"
  shift
  echo "--- wrk $* ($label)"
  wrk "$@" | tee "$work/wrk.txt"
  local p50 p99 rate
  p50="$(awk '$1 == "50%" { print $2 }' "$work/wrk.txt")"
  p99="$(awk '$1 == "99%" { print $2 }' "$work/wrk.txt")"
  rate="$(awk '$1 == "Requests/sec:" { print $2 }' "$work/wrk.txt")"
  summary+=("$(printf '%-28s %-44s p50 %-9s p99 %-9s %s req/s' "$binary_name" "$label" "$p50" "$p99" "$rate")")
}

for binary in "$@"; do
  binary_name="$(basename "$binary")"
  echo "=== $binary"
  "$binary" dashboard --simulate --nodes "$nodes" --bind "127.0.0.1:${port}" >"$work/server.log" 2>&1 &
  server=$!
  gpus=""
  for _ in $(seq 1 300); do
    gpus="$(curl -fsS "$url/healthz" 2>/dev/null | sed -n 's/.*"gpus":\([0-9]*\).*/\1/p')" || true
    [[ -n "$gpus" && "$gpus" != 0 ]] && break
    sleep 0.2
  done
  if [[ -z "$gpus" || "$gpus" == 0 ]]; then
    echo "the dashboard did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  sleep 5 # a few ticks, so that the document and the placements have settled
  echo "$gpus GPUs; $(uptime)"
  plain="$(curl -fsS -o /dev/null -w '%{size_download}' "$url/api/v1/fleet")"
  zipped="$(curl -fsS -o /dev/null -w '%{size_download}' -H 'Accept-Encoding: gzip' "$url/api/v1/fleet")"
  echo "document: $plain bytes plain, $zipped bytes sent with Accept-Encoding: gzip"
  for connections in 8 16; do
    load "closed -c$connections, gzip" -t2 "-c$connections" "-d$duration" --latency \
      -H 'Accept-Encoding: gzip' "$url/api/v1/fleet"
  done
  load "closed -c8, plain" -t2 -c8 "-d$duration" --latency "$url/api/v1/fleet"
  load "paced -c22 x 20 ms (~1050 req/s), gzip" -t2 -c22 "-d$duration" --latency \
    -s "$work/pace.lua" -H 'Accept-Encoding: gzip' "$url/api/v1/fleet"
  load "paced -c22 x 20 ms (~1050 req/s), plain" -t2 -c22 "-d$duration" --latency \
    -s "$work/pace.lua" "$url/api/v1/fleet"
  echo "--- fleet page, $runs first visits"
  node "$here/fleet_page.mjs" "$url/#fleet" "$gpus" "$runs" | tee "$work/page.txt"
  summary+=("$(printf '%-28s %s' "$binary_name" "$(tail -n 1 "$work/page.txt")")")
  stop
done

echo "=== summary ($(uptime))"
printf '%s\n' "${summary[@]}"
