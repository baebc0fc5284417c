#!/usr/bin/env bash
# CPU time per proxied request: Switchyard against nginx, measured in one run with interleaved
# repetitions. Each proxy gets one worker, 64 keep-alive connections from wrk, small responses,
# and the same routing work: a sticky key (x-user-id, 1,000 users), a header rule (x-canary)
# and a 95/5 split between two upstreams. The upstream alone is measured too, and so is the
# floor for a proxy on hyper: `switchyard-loadtest passthrough`, hyper alone with the same split.
# `switchyard` is the release build as shipped, profile-guided (scripts/build-release, which
# takes five to eight minutes); `switchyard-plain` is `cargo build --release` without a profile.
#
#   loadtest/scenarios/proxy-cpu.sh            # DURATION=10 REPS=3 CONNS=64 by default
#   SKIP_PGO_BUILD=1 loadtest/scenarios/proxy-cpu.sh   # reuse target/pgo/switchyard-proxy
#   SKIP_PGO=1 BASELINE=/path/to/switchyard-proxy loadtest/scenarios/proxy-cpu.sh
#
# BASELINE=binary adds `switchyard-before`: that binary with the same table and settings as
# `switchyard-plain`, on its own ports, interleaved in every round; the summary gives the
# ratio plain/before (a before/after comparison of a change, in one run). PLAIN_EXTRA and
# BEFORE_EXTRA are YAML lines added to the two tables, to compare settings rather than
# binaries (BASELINE=target/release/switchyard-proxy PLAIN_EXTRA='accessLog: { path: FILE }'
# is the access log's cost). SKIP_PGO=1 leaves the
# profile-guided build and its row out (no five-to-eight-minute build). SKIP_BUILD=1 uses
# target/release as it is, without `cargo build`.
#
# The answer and the table, for loadtest/results/proxy-cpu-matrix.md (unset: as above):
# UPSTREAM_HEADERS=nginx answers the five headers nginx sends for a static file and
# UPSTREAM_HEADERS=12 twelve (`switchyard-loadtest upstream --headers`); BODY=N a body of N
# bytes (`--body-size`); STICKY=0 takes the sticky key out of both proxies (Switchyard's
# `sticky`; nginx's `split_clients` on x-user-id becomes a weighted upstream), wrk still
# sending x-user-id.
#
# CPU time is read from /proc (user and system) of the proxy's processes before and after each
# wrk run and divided by the requests wrk completed; the table gives the sum and both parts
# (medians of the runs each; /proc counts in 10 ms ticks). RSS is read idle and with 1,000 open
# keep-alive connections. Results go to stdout and loadtest/results/proxy-cpu.md (RESULT=FILE: there).
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10}
REPS=${REPS:-3}
CONNS=${CONNS:-64}
BASE=${BASE_PORT:-19100}
UP_STABLE=$((BASE + 1)) UP_CANARY=$((BASE + 2)) SY=$((BASE + 80)) SY_ADMIN=$((BASE + 90)) NG=$((BASE + 81))
FLOOR=$((BASE + 82)) PLAIN=$((BASE + 83)) PLAIN_ADMIN=$((BASE + 93))
BEFORE=$((BASE + 84)) BEFORE_ADMIN=$((BASE + 94))
BASELINE=${BASELINE:-}
if [ -n "$BASELINE" ] && [ ! -x "$BASELINE" ]; then
  echo "BASELINE=$BASELINE is not an executable" >&2
  exit 1
fi
# The systems in the order of each round (targets) and of the table (rows).
targets=(upstream) rows=(upstream)
[ -z "${SKIP_PGO:-}" ] && targets+=(switchyard) rows+=(switchyard)
targets+=(nginx hyper switchyard-plain) rows+=(switchyard-plain)
[ -n "$BASELINE" ] && targets+=(switchyard-before) rows+=(switchyard-before)
rows+=(nginx hyper)

. loadtest/scenarios/lib.sh
need wrk:wrk nginx:nginx-light
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p switchyard-proxy -p switchyard-loadtest
BIN=target/release
if [ -z "${SKIP_PGO:-}" ]; then
  [ -n "${SKIP_PGO_BUILD:-}" ] && [ -x target/pgo/switchyard-proxy ] || scripts/build-release
fi


start_upstreams "$UP_STABLE" "$UP_CANARY"
SY_PID=
if [ -z "${SKIP_PGO:-}" ]; then
  bench_table "$SY" "$SY_ADMIN" "$UP_STABLE" "$UP_CANARY" >"$work/switchyard.yaml"
  RUST_LOG=warn target/pgo/switchyard-proxy --config "$work/switchyard.yaml" --workers 1 &
  SY_PID=$!
  pids+=($SY_PID)
fi
bench_table "$PLAIN" "$PLAIN_ADMIN" "$UP_STABLE" "$UP_CANARY" >"$work/plain.yaml"
[ -n "${PLAIN_EXTRA:-}" ] && printf '%s\n' "$PLAIN_EXTRA" >>"$work/plain.yaml"
RUST_LOG=warn "$BIN/switchyard-proxy" --config "$work/plain.yaml" --workers 1 &
PLAIN_PID=$!
pids+=($PLAIN_PID)
# The binary to compare with: the same table and settings as switchyard-plain.
BEFORE_PID=
if [ -n "$BASELINE" ]; then
  bench_table "$BEFORE" "$BEFORE_ADMIN" "$UP_STABLE" "$UP_CANARY" >"$work/before.yaml"
  [ -n "${BEFORE_EXTRA:-}" ] && printf '%s\n' "$BEFORE_EXTRA" >>"$work/before.yaml"
  RUST_LOG=warn "$BASELINE" --config "$work/before.yaml" --workers 1 &
  BEFORE_PID=$!
  pids+=($BEFORE_PID)
fi
# The floor: hyper's server and client alone, with the same 95/5 split and nothing else.
"$BIN/switchyard-loadtest" passthrough --listen "127.0.0.1:$FLOOR" \
  --upstream "127.0.0.1:$UP_STABLE" --upstream "127.0.0.1:$UP_CANARY" --every 20 &
FLOOR_PID=$!
pids+=($FLOOR_PID)

nginx_split() {
  if [ "${STICKY:-1}" = 0 ]; then
    echo "  upstream split { server 127.0.0.1:$UP_STABLE weight=95; server 127.0.0.1:$UP_CANARY weight=5; keepalive 64; }"
    echo '  map $http_x_canary $pick { "true" canary; default split; }'
  else
    echo '  split_clients "${http_x_user_id}" $split { 95% stable; * canary; }'
    echo '  map $http_x_canary $pick { "true" canary; default $split; }'
  fi
}
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  upstream stable { server 127.0.0.1:$UP_STABLE; keepalive 64; }
  upstream canary { server 127.0.0.1:$UP_CANARY; keepalive 64; }
  # The same decisions: a header rule first, then a 95/5 split keyed by the user (STICKY=0:
  # weighted round robin).
$(nginx_split)
  server {
    listen 127.0.0.1:$NG;
    keepalive_requests 1000000;
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

for port in $UP_STABLE $UP_CANARY ${SY_PID:+$SY} $PLAIN ${BEFORE_PID:+$BEFORE} $NG $FLOOR; do wait_port "$port"; done
sleep 0.5
NG_PIDS=$(pgrep -f "nginx.*$work/nginx.conf" | tr '\n' ' ')
# The worker is the child of the master.
NG_PIDS="$NG_PIDS $(for p in $NG_PIDS; do pgrep -P "$p"; done | tr '\n' ' ')"

cat >"$work/users.lua" <<'EOF'
math.randomseed(42)
request = function()
  return wrk.format("GET", "/", { ["x-user-id"] = "user-" .. math.random(1, 1000) })
end
EOF


declare -A idle_rss
[ -n "$SY_PID" ] && idle_rss[switchyard]=$(rss_kb $SY_PID)
idle_rss[switchyard-plain]=$(rss_kb $PLAIN_PID)
[ -n "$BEFORE_PID" ] && idle_rss[switchyard-before]=$(rss_kb $BEFORE_PID)
idle_rss[nginx]=$(rss_kb $NG_PIDS)
idle_rss[upstream]=$(rss_kb $UPSTREAM_PID)
idle_rss[hyper]=$(rss_kb $FLOOR_PID)

run() { # port pids... -> "requests cpu_us_per_request rps user_us system_us"
  local port=$1
  shift
  local before after out reqs
  before=$(user_system_ticks "$@")
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$work/users.lua" "http://127.0.0.1:$port/")
  after=$(user_system_ticks "$@")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$before $after" | awk -v hz="$HZ" -v n="$reqs" -v rps="$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')" \
    '{u = ($3 - $1) / hz * 1e6 / n; s = ($4 - $2) / hz * 1e6 / n; printf "%d %.2f %s %.2f %.2f\n", n, u + s, rps, u, s}'
}

# Warm up (pools, caches), then interleave.
[ -n "$SY_PID" ] && wrk -t1 -c"$CONNS" -d2s -s "$work/users.lua" "http://127.0.0.1:$SY/" >/dev/null
wrk -t1 -c"$CONNS" -d2s -s "$work/users.lua" "http://127.0.0.1:$PLAIN/" >/dev/null
[ -n "$BEFORE_PID" ] && wrk -t1 -c"$CONNS" -d2s -s "$work/users.lua" "http://127.0.0.1:$BEFORE/" >/dev/null
wrk -t1 -c"$CONNS" -d2s -s "$work/users.lua" "http://127.0.0.1:$NG/" >/dev/null
wrk -t1 -c"$CONNS" -d2s -s "$work/users.lua" "http://127.0.0.1:$FLOOR/" >/dev/null
declare -A cpu rps user system
for rep in $(seq 1 "$REPS"); do
  for target in "${targets[@]}"; do
    case $target in
      upstream) r=$(run "$UP_STABLE" "$UPSTREAM_PID") ;;
      switchyard) r=$(run "$SY" $SY_PID) ;;
      switchyard-plain) r=$(run "$PLAIN" $PLAIN_PID) ;;
      switchyard-before) r=$(run "$BEFORE" $BEFORE_PID) ;;
      nginx) r=$(run "$NG" $NG_PIDS) ;;
      hyper) r=$(run "$FLOOR" $FLOOR_PID) ;;
    esac
    set -- $r
    cpu[$target]="${cpu[$target]:-} $2"
    rps[$target]="${rps[$target]:-} $3"
    user[$target]="${user[$target]:-} $4"
    system[$target]="${system[$target]:-} $5"
    echo "rep $rep $target: $1 requests, $2 µs CPU/request ($4 user, $5 system), $3 req/s" >&2
  done
done

declare -A busy_rss
[ -n "$SY_PID" ] && busy_rss[switchyard]=$(with_conns_rss "$SY" $SY_PID)
busy_rss[nginx]=$(with_conns_rss "$NG" $NG_PIDS)
busy_rss[hyper]=$(with_conns_rss "$FLOOR" $FLOOR_PID)

mkdir -p loadtest/results
{
  echo "| system | CPU µs / request (median of $REPS) | runs | user µs | system µs | req/s (median) | RSS idle | RSS, 1,000 connections |"
  echo "|---|---|---|---|---|---|---|---|"
  for target in "${rows[@]}"; do
    busy=${busy_rss[$target]:-}
    printf '| %s | %s | %s | %s | %s | %s | %s MiB | %s |\n' "$target" \
      "$(echo "${cpu[$target]}" | median)" "$(echo "${cpu[$target]}" | sed 's/^ //; s/ /, /g')" \
      "$(echo "${user[$target]}" | median)" "$(echo "${system[$target]}" | median)" \
      "$(echo "${rps[$target]}" | median)" "$((idle_rss[$target] / 1024))" \
      "${busy:+$((busy / 1024)) MiB}"
  done
  echo
  echo "wrk -t1 -c$CONNS -d${DURATION}s, x-user-id from 1,000 users; one worker per proxy; upstream: switchyard-loadtest upstream (one thread), headers ${UPSTREAM_HEADERS:-minimal}, body ${BODY:-3} bytes; sticky key ${STICKY:-1}."
  [ -n "$SY_PID" ] && echo "switchyard: the profile-guided release build (scripts/build-release), as shipped; switchyard-plain: cargo build --release, no profile."
  [ -z "$SY_PID" ] && echo "switchyard-plain: cargo build --release, no profile (the profile-guided build was skipped: SKIP_PGO=1)."
  if [ -n "$BEFORE_PID" ]; then
    echo "switchyard-before: $BASELINE, with the same table and settings as switchyard-plain${PLAIN_EXTRA:+, but for \`$PLAIN_EXTRA\` in switchyard-plain}${BEFORE_EXTRA:+, but for \`$BEFORE_EXTRA\` in switchyard-before}."
    plain=$(echo "${cpu[switchyard-plain]}" | median) before=$(echo "${cpu[switchyard-before]}" | median)
    rounds=$(paste -d' ' <(echo "${cpu[switchyard-plain]}" | tr ' ' '\n' | grep -v '^$') \
      <(echo "${cpu[switchyard-before]}" | tr ' ' '\n' | grep -v '^$') | awk '{printf "%s%.3f", (NR > 1 ? ", " : ""), $1 / $2}')
    echo "CPU per request, switchyard-plain / switchyard-before: $(awk -v a="$plain" -v b="$before" 'BEGIN {printf "%.3f", a / b}')x ($plain µs against $before µs, medians of $REPS; round by round: $rounds)."
  fi
  echo "hyper: switchyard-loadtest passthrough, hyper's HTTP/1.1 server and client alone with the same 95/5 split and allocator (no routing table, measurement, header rewriting or timeouts): the floor for a proxy built on hyper."
  echo "Machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r), $(date -u +%Y-%m-%d)."
} | tee "${RESULT:-loadtest/results/proxy-cpu.md}"
