#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: for A/B comparisons of hot-path
# changes, where CPU time moves by a few percent between runs on a small machine. The counts
# repeat within about 1% (how events batch per wake-up still varies). The proxy runs under
# `valgrind --tool=callgrind` with the CPU benchmarks' table (`bench_table` in lib.sh: sticky
# key, header rules, 95/5 split); h2load sends N1 and then, in a fresh run, N2 requests over 64
# keep-alive HTTP/1.1 connections; the difference in instructions over the difference in
# requests leaves start-up and shutdown out.
#
#   loadtest/scenarios/instructions.sh                  # the workspace's release build
#   loadtest/scenarios/instructions.sh path/to/switchyard-proxy   # another build, for A/B
#   loadtest/scenarios/instructions.sh --floor          # `switchyard-loadtest passthrough`,
#                                                       # hyper alone with the same 95/5 split
#
# UPSTREAM_HEADERS and BODY choose the upstreams' answer, as in proxy-cpu.sh; KEEP=FILE keeps the
# profile of the second run (callgrind_annotate FILE); SKIP_BUILD=1 uses target/release as it is.
#
# Installs valgrind and nghttp2-client (h2load) when missing. Counts instructions, not time:
# cache misses and system calls are not in it.
set -euo pipefail
cd "$(dirname "$0")/../.."

N1=${N1:-5000}
N2=${N2:-25000}
BASE=${BASE_PORT:-19300}
UP_STABLE=$((BASE + 1)) UP_CANARY=$((BASE + 2)) SY=$((BASE + 80)) SY_ADMIN=$((BASE + 90))

. loadtest/scenarios/lib.sh
need valgrind:valgrind h2load:nghttp2-client
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p switchyard-proxy -p switchyard-loadtest
PROXY=${1:-target/release/switchyard-proxy}
if [ "$PROXY" = --floor ]; then
  PROXY=target/release/switchyard-loadtest
  ARGS=(passthrough --listen "127.0.0.1:$SY" --upstream "127.0.0.1:$UP_STABLE" --upstream "127.0.0.1:$UP_CANARY" --every 20)
  NAME=passthrough
else
  ARGS=(--config "$work/switchyard.yaml" --workers 1)
  NAME=$(basename "$PROXY")
fi

start_upstreams "$UP_STABLE" "$UP_CANARY"
bench_table "$SY" "$SY_ADMIN" "$UP_STABLE" "$UP_CANARY" >"$work/switchyard.yaml"
wait_port "$UP_STABLE"
wait_port "$UP_CANARY"

# Instructions of one run of the proxy serving $1 requests.
count() {
  rm -f "$work"/callgrind.out.*
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out.%p" \
    "$PROXY" "${ARGS[@]}" >/dev/null 2>"$work/valgrind.log" &
  local proxy=$!
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$SY") 2>/dev/null && break
    sleep 0.1
  done
  h2load --h1 -n "$1" -c 64 -H 'x-user-id: user-7' "http://127.0.0.1:$SY/" >"$work/h2load.log"
  # Every request answered 2xx: a proxy answering 502 would count far fewer instructions.
  grep -q "status codes: $1 2xx" "$work/h2load.log" || { cat "$work/h2load.log" >&2; exit 1; }
  # TERM: a background job of a script ignores INT unless it handles it, as the proxy does.
  kill -TERM "$proxy"
  wait "$proxy" || true
  awk '/^(summary|totals):/ {print $2; exit}' "$work"/callgrind.out.*
}

a=$(count "$N1")
b=$(count "$N2")
# KEEP=FILE keeps the second run's callgrind profile, for callgrind_annotate.
[ -n "${KEEP:-}" ] && cp "$work"/callgrind.out.* "$KEEP"
echo "$NAME: $(((b - a) / (N2 - N1))) instructions per request ($N2 - $N1 requests through h2load --h1 -c 64)"
