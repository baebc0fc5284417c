#!/usr/bin/env bash
# Hot swap under load: the same open-loop load through Switchyard twice, once with a steady
# table and once while the table is swapped 100 times a second through the admin API
# (alternating 95/5 and 5/95). Reports failed requests and latency percentiles of both runs.
#
#   loadtest/scenarios/hot-swap.sh        # DURATION=30 RATE=5000 SWAPS_PER_SECOND=100
#
# Writes loadtest/results/hot-swap.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-30}
RATE=${RATE:-5000}
SWAPS=${SWAPS_PER_SECOND:-100}
BASE=${BASE_PORT:-19600}
UP_A=$((BASE + 1)) UP_B=$((BASE + 2)) SY=$((BASE + 10)) ADMIN=$((BASE + 11))

cargo build --release -q -p switchyard-proxy -p switchyard-loadtest
BIN=target/release
. loadtest/scenarios/lib.sh

"$BIN/switchyard-loadtest" upstream --listen "127.0.0.1:$UP_A" --name stable &
pids+=($!)
"$BIN/switchyard-loadtest" upstream --listen "127.0.0.1:$UP_B" --name canary &
pids+=($!)
cat >"$work/proxy.yaml" <<EOF
listen: 127.0.0.1:$SY
admin: { listen: 127.0.0.1:$ADMIN }
routes:
  - name: bench
    tracks:
      - { name: stable, endpoints: ["127.0.0.1:$UP_A"], weight: 95 }
      - { name: canary, endpoints: ["127.0.0.1:$UP_B"], weight: 5 }
EOF
RUST_LOG=warn "$BIN/switchyard-proxy" --config "$work/proxy.yaml" --workers 1 &
pids+=($!)
for p in $UP_A $UP_B $SY $ADMIN; do wait_port "$p"; done

load() {
  "$BIN/switchyard-loadtest" run --json --url "http://127.0.0.1:$SY/" --rate "$RATE" --connections 64 \
    --warmup 1s --duration "${DURATION}s" --users 1000
}
summary() { # label json-file swaps
  python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
label, path, swaps = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.load(open(path))
t, l = r["totals"], r["latencyUs"] or {}
ms = lambda k: "%.3f" % (l.get(k, 0) / 1000)
print(f"| {label} | {swaps} | {t['requests']} | {t['errors']} | {ms('p50')} | {ms('p99')} | {ms('p999')} | {ms('max')} |")
EOF
}

load >"$work/steady.json"
# The swapper: one keep-alive admin connection, PUTs paced to SWAPS per second, counted.
python3 - "$ADMIN" "$SWAPS" "$((DURATION + 1))" >"$work/swaps.txt" <<'EOF' &
import http.client, json, sys, time
port, per_second, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
tables = []
for canary in (5, 95):
    tables.append(json.dumps({"routes": [{"name": "bench", "tracks": [
        {"name": "stable", "endpoints": ["127.0.0.1:%d" % (port - 10)], "weight": 100 - canary},
        {"name": "canary", "endpoints": ["127.0.0.1:%d" % (port - 9)], "weight": canary}]}]}))
conn = http.client.HTTPConnection("127.0.0.1", port)
done = failed = 0
start = time.monotonic()
while time.monotonic() - start < seconds:
    due = start + done / per_second
    pause = due - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    conn.request("PUT", "/routes", tables[done % 2], {"content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    failed += response.status != 200
    done += 1
print(done, failed)
EOF
swapper=$!
load >"$work/swapping.json"
wait "$swapper"
read -r swaps swap_failures <"$work/swaps.txt"

mkdir -p loadtest/results
{
  echo "| run | table swaps | requests | failed | p50 ms | p99 ms | p99.9 ms | max ms |"
  echo "|---|---|---|---|---|---|---|---|"
  summary "steady table" "$work/steady.json" 0
  summary "swapping ${SWAPS}/s" "$work/swapping.json" "$swaps"
  echo
  echo "Open loop at $RATE req/s for ${DURATION}s over 64 connections (switchyard-loadtest run), one proxy worker; swaps alternate 95/5 and 5/95 through PUT /routes ($swap_failures swap requests failed)."
  echo "Machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(date -u +%Y-%m-%d)."
} | tee loadtest/results/hot-swap.md
