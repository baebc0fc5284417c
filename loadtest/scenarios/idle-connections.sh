#!/usr/bin/env bash
# Memory per idle keep-alive connection: Switchyard against nginx and the hyper floor, in one
# run. For each, a client opens CONNS HTTP/1.1 keep-alive connections one after another, sends
# one request on each and reads its response, then keeps them all open and silent. The proxy's RSS is read
# idle (before any connection) and SETTLE seconds after the last response; the difference over
# CONNS is the memory of one idle connection. The client then checks that every connection is
# still open (none read EOF), so that no limit or timeout of the proxy closed some of them during
# the measurement.
#
#   loadtest/scenarios/idle-connections.sh          # CONNS=10000 SETTLE=5 WORKERS=1
#   PROXY=/path/to/switchyard-proxy SKIP_BUILD=1 loadtest/scenarios/idle-connections.sh
#
# Both proxies forward to `switchyard-loadtest upstream` with the CPU benchmarks' table
# (bench_table in lib.sh), one worker each (WORKERS), limits and timeouts raised past the run:
# Switchyard `limits.maxConnections` CONNS + 100, `timeouts.idle` 10 minutes; nginx
# `worker_connections` and `keepalive_timeout` likewise. SETTLE (seconds) is how long the
# connections sit idle before RSS is read. The client needs CONNS descriptors: `ulimit -n` is
# raised to the hard limit (the proxies raise their own), and CONNS lowered to what the
# proxy's descriptors allow where the hard limit is too low. The table goes to stdout, and to
# OUT when set.
set -euo pipefail
cd "$(dirname "$0")/../.."

CONNS=${CONNS:-10000}
SETTLE=${SETTLE:-5}
WORKERS=${WORKERS:-1}
BASE=${BASE_PORT:-19400}
UP_STABLE=$((BASE + 1)) UP_CANARY=$((BASE + 2)) SY=$((BASE + 80)) SY_ADMIN=$((BASE + 90)) NG=$((BASE + 81))
FLOOR=$((BASE + 82))
PROXY=${PROXY:-target/release/switchyard-proxy}

. loadtest/scenarios/lib.sh
need nginx:nginx-light python3:python3
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p switchyard-proxy -p switchyard-loadtest
ulimit -n "$(ulimit -Hn)"
# Switchyard serves as many connections as its descriptors allow at two each, after 64 (see
# proxy/src/open_files.rs); past that, connections wait to be accepted. Where the hard limit is
# too low for CONNS (and cannot be raised without CAP_SYS_RESOURCE), fewer are measured.
allowed=$((($(ulimit -n) - 64) / 2 / 100 * 100 - 100))
if [ "$allowed" -lt "$CONNS" ]; then
  echo "the open-file limit ($(ulimit -n)) allows the proxy $(( ($(ulimit -n) - 64) / 2 )) connections: measuring $allowed instead of $CONNS" >&2
  CONNS=$allowed
fi

start_upstreams "$UP_STABLE" "$UP_CANARY"
{
  bench_table "$SY" "$SY_ADMIN" "$UP_STABLE" "$UP_CANARY"
  echo "limits: { maxConnections: $((CONNS + 100)) }"
  echo "timeouts: { idle: 600s }"
} >"$work/switchyard.yaml"
RUST_LOG=warn "$PROXY" --config "$work/switchyard.yaml" --workers "$WORKERS" &
SY_PID=$!
pids+=($SY_PID)

mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<EOF
worker_processes $WORKERS;
worker_rlimit_nofile $((2 * CONNS + 200));
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections $((2 * CONNS + 100)); }
http {
  access_log off;
  keepalive_timeout 600s;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  upstream stable { server 127.0.0.1:$UP_STABLE; keepalive 64; }
  upstream canary { server 127.0.0.1:$UP_CANARY; keepalive 64; }
  split_clients "\${http_x_user_id}" \$split { 95% stable; * canary; }
  map \$http_x_canary \$pick { "true" canary; default \$split; }
  server {
    listen 127.0.0.1:$NG;
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

# The floor: hyper's server and client alone, with the same 95/5 split and allocator.
target/release/switchyard-loadtest passthrough --listen "127.0.0.1:$FLOOR" \
  --upstream "127.0.0.1:$UP_STABLE" --upstream "127.0.0.1:$UP_CANARY" --every 20 &
FLOOR_PID=$!
pids+=($FLOOR_PID)

for port in $UP_STABLE $UP_CANARY $SY $NG $FLOOR; do wait_port "$port"; done
sleep 0.5
NG_PIDS=$(pgrep -f "nginx.*$work/nginx.conf" | tr '\n' ' ')
NG_PIDS="$NG_PIDS $(for p in $NG_PIDS; do pgrep -P "$p"; done | tr '\n' ' ')"

# Opens $2 connections to 127.0.0.1:$1, one request each; touches $3 when all are answered and
# idle, then waits for $3 to be removed, checks that every connection is still open, prints
# "OPEN ANSWERED" and closes them.
hold() {
  python3 - "$@" <<'PY'
import os, socket, sys, time
port, n, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conns, answered = [], 0
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nx-user-id: u%d\r\n\r\n" % i)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    if head.startswith(b"HTTP/1.1 200"):
        answered += 1
    conns.append(s)
open(ready, "w").close()
while os.path.exists(ready):
    time.sleep(0.05)
still_open = 0
for s in conns:
    s.setblocking(False)
    try:
        still_open += s.recv(1) != b""
    except BlockingIOError:
        still_open += 1
    except OSError:
        pass
print(still_open, answered)
PY
}

declare -A idle busy open answered
measure() { # name port pids...
  local name=$1 port=$2
  shift 2
  idle[$name]=$(rss_kb "$@")
  local ready=/dev/shm/switchyard-idle-conns-$port
  rm -f "$ready"
  hold "$port" "$CONNS" "$ready" >"$work/hold-$name" &
  local holder=$!
  until [ -e "$ready" ]; do
    kill -0 "$holder" 2>/dev/null || { echo "the client of $name failed" >&2; exit 1; }
    sleep 0.05
  done
  sleep "$SETTLE"
  busy[$name]=$(rss_kb "$@")
  rm -f "$ready"
  wait "$holder"
  read -r open[$name] answered[$name] <"$work/hold-$name"
  echo "$name: RSS ${idle[$name]} KiB idle, ${busy[$name]} KiB with $CONNS connections (${open[$name]} still open, ${answered[$name]} answered 200)" >&2
  # Let the closed connections go before the next proxy is measured.
  sleep 1
}

measure switchyard "$SY" $SY_PID
measure nginx "$NG" $NG_PIDS
measure hyper "$FLOOR" $FLOOR_PID

mkdir -p loadtest/results
{
  echo "| system | RSS idle | RSS, $CONNS idle connections | KiB per connection | still open | answered 200 |"
  echo "|---|---|---|---|---|---|"
  for name in switchyard nginx hyper; do
    printf '| %s | %.1f MiB | %.1f MiB | %.2f | %s | %s |\n' "$name" \
      "$(awk -v k="${idle[$name]}" 'BEGIN {print k / 1024}')" "$(awk -v k="${busy[$name]}" 'BEGIN {print k / 1024}')" \
      "$(awk -v a="${busy[$name]}" -v b="${idle[$name]}" -v n="$CONNS" 'BEGIN {print (a - b) / n}')" \
      "${open[$name]}" "${answered[$name]}"
  done
  echo
  echo "$CONNS HTTP/1.1 keep-alive connections, one GET each, then idle; RSS read ${SETTLE} s after the last response; one worker per proxy (WORKERS=$WORKERS); switchyard: $PROXY; upstream: switchyard-loadtest upstream."
  echo "hyper: switchyard-loadtest passthrough, hyper's HTTP/1.1 server and client alone with the same split and allocator: the floor for a proxy on hyper."
  echo "Machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r), $(date -u +%Y-%m-%d)."
} | tee ${OUT:+"$OUT"}
