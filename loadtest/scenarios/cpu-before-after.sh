#!/usr/bin/env bash
# CPU time per proxied request of two builds of switchyard-proxy, measured in one run with
# interleaved rounds: the check that a change does not cost the plain request path more than a
# share of CPU. The setting is proxy-cpu.sh's: one worker each, 64 keep-alive connections from
# wrk, a sticky key (x-user-id, 1,000 users), a header rule and a 95/5 split over two
# switchyard-loadtest upstreams.
#
#   BEFORE=/path/to/old/switchyard-proxy AFTER=target/release/switchyard-proxy \
#     loadtest/scenarios/cpu-before-after.sh          # REPS=5 DURATION=10 CONNS=64 by default
#
# Each round measures before, then after, then the same again in the opposite order, so that
# drift on this noisy machine falls on both; the table gives medians and the ratio after/before
# of each round. Results go to stdout and loadtest/results/cpu-before-after.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10}
REPS=${REPS:-5}
CONNS=${CONNS:-64}
BASE=${BASE_PORT:-19300}
BEFORE=${BEFORE:?set BEFORE to the switchyard-proxy binary to compare against}
AFTER=${AFTER:-target/release/switchyard-proxy}
UP_STABLE=$((BASE + 1)) UP_CANARY=$((BASE + 2))
P_BEFORE=$((BASE + 10)) A_BEFORE=$((BASE + 20)) P_AFTER=$((BASE + 11)) A_AFTER=$((BASE + 21))

. loadtest/scenarios/lib.sh
need wrk:wrk
[ -x target/release/switchyard-loadtest ] || cargo build --release -q -p switchyard-loadtest
BIN=target/release

start_upstreams "$UP_STABLE" "$UP_CANARY"
bench_table "$P_BEFORE" "$A_BEFORE" "$UP_STABLE" "$UP_CANARY" >"$work/before.yaml"
bench_table "$P_AFTER" "$A_AFTER" "$UP_STABLE" "$UP_CANARY" >"$work/after.yaml"
RUST_LOG=warn "$BEFORE" --config "$work/before.yaml" --workers 1 &
BEFORE_PID=$!
pids+=($BEFORE_PID)
RUST_LOG=warn "$AFTER" --config "$work/after.yaml" --workers 1 &
AFTER_PID=$!
pids+=($AFTER_PID)
for port in $UP_STABLE $UP_CANARY $P_BEFORE $P_AFTER; do wait_port "$port"; done

cat >"$work/users.lua" <<'EOF'
math.randomseed(42)
request = function()
  return wrk.format("GET", "/", { ["x-user-id"] = "user-" .. math.random(1, 1000) })
end
EOF

run() { # port pid -> "cpu_us_per_request"
  local before after out reqs
  before=$(user_system_ticks "$2")
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$work/users.lua" "http://127.0.0.1:$1/")
  after=$(user_system_ticks "$2")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$before $after" | awk -v hz="$HZ" -v n="$reqs" '{printf "%.3f\n", (($3 - $1) + ($4 - $2)) / hz * 1e6 / n}'
}

wrk -t1 -c"$CONNS" -d2s -s "$work/users.lua" "http://127.0.0.1:$P_BEFORE/" >/dev/null
wrk -t1 -c"$CONNS" -d2s -s "$work/users.lua" "http://127.0.0.1:$P_AFTER/" >/dev/null
befores="" afters="" ratios=""
for rep in $(seq 1 "$REPS"); do
  if [ $((rep % 2)) -eq 1 ]; then
    b=$(run "$P_BEFORE" "$BEFORE_PID")
    a=$(run "$P_AFTER" "$AFTER_PID")
  else
    a=$(run "$P_AFTER" "$AFTER_PID")
    b=$(run "$P_BEFORE" "$BEFORE_PID")
  fi
  r=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", a / b}')
  echo "round $rep: before $b µs, after $a µs, ratio $r" >&2
  befores="$befores $b" afters="$afters $a" ratios="$ratios $r"
done

mkdir -p loadtest/results
{
  echo "| build | CPU µs / request (median of $REPS) | rounds |"
  echo "|---|---|---|"
  echo "| before ($BEFORE) | $(echo "$befores" | median) | $(echo "$befores" | sed 's/^ //; s/ /, /g') |"
  echo "| after ($AFTER) | $(echo "$afters" | median) | $(echo "$afters" | sed 's/^ //; s/ /, /g') |"
  echo
  echo "after / before: median $(echo "$ratios" | median), rounds $(echo "$ratios" | sed 's/^ //; s/ /, /g')."
  echo "wrk -t1 -c$CONNS -d${DURATION}s, x-user-id from 1,000 users, a header rule and a 95/5 split; one worker per proxy."
  echo "Machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r), $(date -u +%Y-%m-%d)."
} | tee loadtest/results/cpu-before-after.md
