#!/usr/bin/env bash
# Latency at fixed rates, Switchyard against nginx, in one run with interleaved rounds. Both have
# one worker in front of the same two upstreams with the same 95/5 split (compare.sh's tables:
# no sticky key, no rules). First the maximum rate of each (closed loop, 64 connections, ROUNDS
# interleaved rounds); then, at 25%, 50% and 75% of nginx's median maximum, ROUNDS interleaved
# rounds of an open-loop run against each (switchyard-loadtest run --rate: latency from each
# request's intended send time, coordinated omission corrected). The table gives the medians of
# the rounds' p50, p99 and p99.9 and every round's p99, and the client's own send lag.
#
#   loadtest/scenarios/latency.sh        # ROUNDS=3 DURATION=5 CONNS=64 by default
#   PROXY=target/pgo/switchyard-proxy loadtest/scenarios/latency.sh   # another build
#   CLIENT_THREADS=2 loadtest/scenarios/latency.sh    # a two-thread client runtime
#   SYSTEMS="switchyard nginx hyper" PCTS=25 MAX_RPS=32000 loadtest/scenarios/latency.sh
#
# SYSTEMS may add `hyper` (switchyard-loadtest passthrough, hyper alone with the same split: the
# floor, as in proxy-cpu.sh); PCTS the loads in % (default "25 50 75"); MAX_RPS skips the
# closed-loop phase and takes that as nginx's maximum.
#
# PROXY defaults to target/release/switchyard-proxy (cargo build --release, no profile);
# SKIP_BUILD=1 uses target/release as it is. Results go to stdout and
# loadtest/results/latency.md (RESULT=FILE: there).
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
BASE=${BASE_PORT:-19700}
UP_A=$((BASE + 1)) UP_B=$((BASE + 2))
declare -A PORT=([switchyard]=$((BASE + 10)) [nginx]=$((BASE + 11)) [hyper]=$((BASE + 12)))
read -r -a SYSTEMS <<<"${SYSTEMS:-switchyard nginx}"
read -r -a PCTS <<<"${PCTS:-25 50 75}"
PROXY=${PROXY:-target/release/switchyard-proxy}
declare -A PIDS

. loadtest/scenarios/lib.sh
need nginx:nginx-light
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p switchyard-proxy -p switchyard-loadtest
BIN=target/release

start_upstreams "$UP_A" "$UP_B"
cat >"$work/switchyard.yaml" <<EOF
listen: 127.0.0.1:${PORT[switchyard]}
admin: { listen: 127.0.0.1:$((BASE + 20)) }
routes:
  - name: bench
    tracks:
      - { name: stable, endpoints: ["127.0.0.1:$UP_A"], weight: 95 }
      - { name: canary, endpoints: ["127.0.0.1:$UP_B"], weight: 5 }
EOF
[ -n "${PROXY_EXTRA:-}" ] && printf '%s\n' "$PROXY_EXTRA" >>"$work/switchyard.yaml"
RUST_LOG=warn "$PROXY" --config "$work/switchyard.yaml" --workers 1 &
PIDS=([switchyard]=$!)
pids+=($!)

"$BIN/switchyard-loadtest" passthrough --listen "127.0.0.1:${PORT[hyper]}" \
  --upstream "127.0.0.1:$UP_A" --upstream "127.0.0.1:$UP_B" --every 20 &
PIDS[hyper]=$!
pids+=($!)

mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  upstream bench { server 127.0.0.1:$UP_A weight=95; server 127.0.0.1:$UP_B weight=5; keepalive 64; }
  server {
    listen 127.0.0.1:${PORT[nginx]};
    keepalive_requests 1000000;
    location / { proxy_pass http://bench; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
for s in switchyard nginx hyper; do wait_port "${PORT[$s]}"; done
sleep 0.5
PIDS[nginx]="$(pgrep -f "nginx.*$work/nginx.conf" | tr '\n' ' ') $(for p in $(pgrep -f "nginx.*$work/nginx.conf"); do pgrep -P "$p"; done | tr '\n' ' ')"

load() {
  "$BIN/switchyard-loadtest" run --json --connections "$CONNS" --warmup 1s --duration "${DURATION}s" \
    --threads "${CLIENT_THREADS:-1}" "$@"
}
field() { python3 -c 'import json,sys; r=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

declare -A max_rps
for round in $(seq 1 "$([ -n "${MAX_RPS:-}" ] && echo 0 || echo "$ROUNDS")"); do
  for s in "${SYSTEMS[@]}"; do
    r=$(load --url "http://127.0.0.1:${PORT[$s]}/" --max | field 'round(r["totals"]["achievedRate"])')
    max_rps[$s]="${max_rps[$s]:-} $r"
    echo "round $round $s: $r req/s max" >&2
  done
done
nginx_max=${MAX_RPS:-$(echo "${max_rps[nginx]:-}" | median)}

# p50, p99 and p99.9 of each round, ms, the client's p99 send lag, ms, and the proxy's CPU time
# per request (user and system from /proc over the run, warm-up included: µs over requests
# scaled by the warm-up's share).
declare -A p50 p99 p999 lag cpu
for pct in "${PCTS[@]}"; do
  rate=$(awk -v m="$nginx_max" -v p="$pct" 'BEGIN {printf "%d", m * p / 100}')
  for round in $(seq 1 "$ROUNDS"); do
    for s in "${SYSTEMS[@]}"; do
      before=$(ticks ${PIDS[$s]})
      out=$(load --url "http://127.0.0.1:${PORT[$s]}/" --rate "$rate")
      after=$(ticks ${PIDS[$s]})
      set -- $(echo "$out" | field \
        '" ".join(str(round(v / 1000, 3)) for v in (r["latencyUs"]["p50"], r["latencyUs"]["p99"], r["latencyUs"]["p999"], (r.get("sendLagUs") or {}).get("p99", 0)))') \
        "$(echo "$out" | field 'r["totals"]["requests"]' | awk -v t=$((after - before)) -v hz="$HZ" -v d="$DURATION" '{printf "%.1f", t / hz * 1e6 / ($1 * (d + 1) / d)}')"
      cpu[$s,$pct]="${cpu[$s,$pct]:-} $5"
      p50[$s,$pct]="${p50[$s,$pct]:-} $1" p99[$s,$pct]="${p99[$s,$pct]:-} $2"
      p999[$s,$pct]="${p999[$s,$pct]:-} $3" lag[$s,$pct]="${lag[$s,$pct]:-} $4"
      echo "$pct% ($rate req/s) round $round $s: p50 $1 p99 $2 p99.9 $3 ms, send lag p99 $4 ms, $5 µs CPU/request" >&2
    done
  done
done

mkdir -p loadtest/results
{
  echo "| system | load | p50 ms | p99 ms | p99.9 ms | p99 of each round, ms | client send lag p99 ms | proxy CPU µs / request |"
  echo "|---|---|---|---|---|---|---|---|"
  for pct in "${PCTS[@]}"; do
    rate=$(awk -v m="$nginx_max" -v p="$pct" 'BEGIN {printf "%d", m * p / 100}')
    for s in "${SYSTEMS[@]}"; do
      printf '| %s | %s%% (%s req/s) | %s | %s | %s | %s | %s | %s |\n' "$s" "$pct" "$rate" \
        "$(echo "${p50[$s,$pct]}" | median)" "$(echo "${p99[$s,$pct]}" | median)" \
        "$(echo "${p999[$s,$pct]}" | median)" "$(echo "${p99[$s,$pct]}" | sed 's/^ //; s/ /, /g')" \
        "$(echo "${lag[$s,$pct]}" | median)" "$(echo "${cpu[$s,$pct]}" | median)"
    done
  done
  echo
  if [ -n "${MAX_RPS:-}" ]; then
    echo "Fixed rates are ${PCTS[*]}% of MAX_RPS=$MAX_RPS req/s."
  else
    echo "Maximum req/s (closed loop, rounds):$(for s in "${SYSTEMS[@]}"; do printf ' %s %s;' "$s" "${max_rps[$s]# }"; done) fixed rates are ${PCTS[*]}% of nginx's median ($nginx_max req/s)."
  fi
  echo "Medians of $ROUNDS interleaved rounds of ${DURATION}s (1 s warm-up) each, $CONNS keep-alive connections, client switchyard-loadtest run --threads ${CLIENT_THREADS:-1}; one worker per proxy; hyper: switchyard-loadtest passthrough, 95/5 split, no sticky key; switchyard: $PROXY${PROXY_EXTRA:+ with \`$PROXY_EXTRA\`}."
  echo "Machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r), $(date -u +%Y-%m-%d)."
} | tee "${RESULT:-loadtest/results/latency.md}"
