#!/usr/bin/env bash
# CPU time per proxied request over HTTP/2, Switchyard against nginx, in one run with
# interleaved rounds: h2c (prior knowledge) and TLS with ALPN h2, downstream; HTTP/1.1 keep-alive
# upstream for both. The same table and split as proxy-cpu.sh (bench_table: sticky key, two
# header rules, 95/5), one worker each, the same self-signed P-256 certificate for both.
# h2load sends N requests over C connections with M streams each and x-user-id: user-7; CPU time
# is read from /proc (user and system) of the proxy's processes before and after each run.
#
#   loadtest/scenarios/h2-cpu.sh       # ROUNDS=3 N=100000 C=16 M=10 by default
#
# PROXY defaults to target/release/switchyard-proxy (cargo build --release, no profile);
# SKIP_BUILD=1 uses target/release as it is. Installs h2load (nghttp2-client) and nginx-light
# when missing. Results go to stdout and loadtest/results/h2-cpu.md (RESULT=FILE: there).
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
N=${N:-100000}
C=${C:-16}
M=${M:-10}
BASE=${BASE_PORT:-19900}
UP_STABLE=$((BASE + 1)) UP_CANARY=$((BASE + 2))
SY=$((BASE + 10)) SY_TLS=$((BASE + 11)) SY_ADMIN=$((BASE + 12)) NG=$((BASE + 20)) NG_TLS=$((BASE + 21))
PROXY=${PROXY:-target/release/switchyard-proxy}

. loadtest/scenarios/lib.sh
need h2load:nghttp2-client nginx:nginx-light
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p switchyard-proxy -p switchyard-loadtest

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

start_upstreams "$UP_STABLE" "$UP_CANARY"
bench_table "$SY" "$SY_ADMIN" "$UP_STABLE" "$UP_CANARY" |
  sed "1s|.*|listen:\n  - 127.0.0.1:$SY\n  - { address: 127.0.0.1:$SY_TLS, tls: { certFile: \"$work/cert.pem\", keyFile: \"$work/key.pem\" } }|" \
    >"$work/switchyard.yaml"
RUST_LOG=warn "$PROXY" --config "$work/switchyard.yaml" --workers 1 &
SY_PID=$!
pids+=($SY_PID)

mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  upstream stable { server 127.0.0.1:$UP_STABLE; keepalive 64; }
  upstream canary { server 127.0.0.1:$UP_CANARY; keepalive 64; }
  split_clients "\${http_x_user_id}" \$split { 95% stable; * canary; }
  map \$http_x_canary \$pick { "true" canary; default \$split; }
  server {
    listen 127.0.0.1:$NG http2;
    listen 127.0.0.1:$NG_TLS ssl http2;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    keepalive_requests 1000000;
    http2_max_requests 1000000;
    location / {
      proxy_pass http://\$pick;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      add_header x-switchyard-track \$pick;
    }
  }
}
EOF
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
for port in $UP_STABLE $UP_CANARY $SY $SY_TLS $NG $NG_TLS; do wait_port "$port"; done
sleep 0.5
NG_PIDS=$(pgrep -f "nginx.*$work/nginx.conf" | tr '\n' ' ')
NG_PIDS="$NG_PIDS $(for p in $NG_PIDS; do pgrep -P "$p"; done | tr '\n' ' ')"

run() { # url pids... -> "cpu_us_per_request user_us system_us req/s"
  local url=$1
  shift
  local before after out
  before=$(user_system_ticks "$@")
  out=$(h2load -n "$N" -c "$C" -m "$M" -H 'x-user-id: user-7' "$url")
  after=$(user_system_ticks "$@")
  echo "$out" | grep -q "status codes: $N 2xx" || { echo "$out" >&2; exit 1; }
  echo "$out" | grep -q '^Application protocol: h2' || { echo "$out" >&2; exit 1; }
  echo "$before $after" | awk -v hz="$HZ" -v n="$N" -v rps="$(echo "$out" | awk '/^finished in/ {printf "%.0f", $4}')" \
    '{u = ($3 - $1) / hz * 1e6 / n; s = ($4 - $2) / hz * 1e6 / n; printf "%.2f %.2f %.2f %s\n", u + s, u, s, rps}'
}
declare -A URL=([switchyard,h2c]="http://127.0.0.1:$SY/" [switchyard,tls]="https://127.0.0.1:$SY_TLS/"
  [nginx,h2c]="http://127.0.0.1:$NG/" [nginx,tls]="https://127.0.0.1:$NG_TLS/")
CIPHER=$(h2load -n 1 -c 1 "https://127.0.0.1:$NG_TLS/" | awk -F': ' '/^Cipher:/ {print $2}')

declare -A cpu user system rps
for key in "${!URL[@]}"; do h2load -n $((N / 10)) -c "$C" -m "$M" "${URL[$key]}" >/dev/null; done
for round in $(seq 1 "$ROUNDS"); do
  for proto in h2c tls; do
    for s in switchyard nginx; do
      case $s in switchyard) p=$SY_PID ;; nginx) p=$NG_PIDS ;; esac
      set -- $(run "${URL[$s,$proto]}" $p)
      cpu[$s,$proto]="${cpu[$s,$proto]:-} $1" user[$s,$proto]="${user[$s,$proto]:-} $2"
      system[$s,$proto]="${system[$s,$proto]:-} $3" rps[$s,$proto]="${rps[$s,$proto]:-} $4"
      echo "round $round $proto $s: $1 µs CPU/request ($2 user, $3 system), $4 req/s" >&2
    done
  done
done

mkdir -p loadtest/results
{
  echo "| downstream | system | CPU µs / request (median of $ROUNDS) | rounds | user µs | system µs | req/s (median) |"
  echo "|---|---|---|---|---|---|---|"
  for proto in h2c tls; do
    for s in switchyard nginx; do
      printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$proto" "$s" "$(echo "${cpu[$s,$proto]}" | median)" \
        "$(echo "${cpu[$s,$proto]}" | sed 's/^ //; s/ /, /g')" "$(echo "${user[$s,$proto]}" | median)" \
        "$(echo "${system[$s,$proto]}" | median)" "$(echo "${rps[$s,$proto]}" | median)"
    done
    a=$(echo "${cpu[switchyard,$proto]}" | median) b=$(echo "${cpu[nginx,$proto]}" | median)
    ratios+=("$proto: $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", a / b}')x (rounds $(paste -d' ' \
      <(echo "${cpu[switchyard,$proto]}" | tr ' ' '\n' | grep -v '^$') <(echo "${cpu[nginx,$proto]}" | tr ' ' '\n' | grep -v '^$') |
      awk '{printf "%s%.3f", (NR > 1 ? ", " : ""), $1 / $2}'))")
  done
  echo
  echo "Switchyard / nginx, CPU per request: ${ratios[*]}."
  echo "h2load -n $N -c $C -m $M -H 'x-user-id: user-7' (h2c: prior knowledge; tls: ALPN h2, $CIPHER); one worker per proxy, HTTP/1.1 keep-alive upstream; switchyard: $PROXY."
  echo "Machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r), $(date -u +%Y-%m-%d)."
} | tee "${RESULT:-loadtest/results/h2-cpu.md}"
