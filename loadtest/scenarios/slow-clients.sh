#!/usr/bin/env bash
# Slow clients against a proxy: does a fresh client still get served while slowhttptest holds
# thousands of connections open? For each attack, slow headers (slowloris, `-H`) and slow request
# bodies (R-U-Dead-Yet, `-B`), each with `-c 3000 -r 600 -i 5 -x 24 -s 1000000 -p 3 -l DURATION`,
# a probe beside it opens a fresh TCP connection every 0.25 s and sends `GET /` with a 2 s limit
# (curl --max-time 2); the share answered 2xx within 2 s is reported, then 10 more probes right
# after the attack tell whether the proxy is back to normal. The proxy's open file descriptors,
# RSS, downstream and upstream connections are sampled every second (the peak is reported), and
# its CPU time over the attack.
#
#   loadtest/scenarios/slow-clients.sh                  # PROXY=target/release/switchyard-proxy
#   PROXY=/work/baseline-bin/switchyard-proxy DURATION=30 RUNS=3 loadtest/scenarios/slow-clients.sh
#   PROXY=nginx loadtest/scenarios/slow-clients.sh      # or PROXY=haproxy: the same test of a peer
#
# The upstream is nginx serving a small static page (worker_connections 16000,
# worker_rlimit_nofile 40000 or the hard limit), so it is not the limit. Switchyard runs with its
# defaults (`--workers` as WORKERS gives, else the proxy's own default) and with the
# file-descriptor limit of the shell that runs this script, unless PROXY_NOFILE sets its soft
# limit (e.g. PROXY_NOFILE=1024, a login shell's usual soft limit; the proxy raises its soft
# limit to the hard one at start) or PROXY_NOFILE_HARD its hard limit too. PROXY_LIMITS adds a `limits:` mapping to
# its configuration (e.g. PROXY_LIMITS='{ maxIdlePerEndpoint: 0 }'). slowhttptest needs more file
# descriptors than connections: the script raises `ulimit -n` for slowhttptest alone and says so.
# UPSTREAM_READS_BODY=1 makes the upstream read every request body whole before it answers (an
# application's upload endpoint) instead of answering a POST at once (405, a static file server).
# ATTACKS="H B HB" adds a run of both attacks at once (CONNS connections each).
# Other knobs: CONNS=3000 RATE=600, ATTACKS="H B", BASE_PORT=19800, OUT=file (a copy of the table).
# The proxy's log (RUST_LOG, default warn) is summarized per attack: its WARN and ERROR lines.
# Needs root to install slowhttptest, nginx (and haproxy) from Debian when they are missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

PROXY=${PROXY:-target/release/switchyard-proxy}
DURATION=${DURATION:-30}
RUNS=${RUNS:-1}
CONNS=${CONNS:-3000}
RATE=${RATE:-600}
ATTACKS=${ATTACKS:-H B}
BASE=${BASE_PORT:-19800}
UP=$((BASE + 1)) PX=$((BASE + 10)) PX_ADMIN=$((BASE + 20))

. loadtest/scenarios/lib.sh
# So that the cleanup (an EXIT trap) also runs when interrupted.
trap 'exit 130' INT TERM
need slowhttptest:slowhttptest nginx:nginx-light curl:curl ss:iproute2
[ "$PROXY" = haproxy ] && need haproxy:haproxy

# slowhttptest holds one descriptor per connection and a few more; raised for it alone.
proxy_nofile=$(ulimit -Sn)
slow_nofile=$(ulimit -Sn)
want=$((CONNS + 1024))
if [ "$slow_nofile" != unlimited ] && [ "$slow_nofile" -lt "$want" ]; then
  hard=$(ulimit -Hn)
  if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    ulimit -Hn "$want" 2>/dev/null || { echo "ulimit -Hn is $hard, slowhttptest needs $want: run as root" >&2; exit 1; }
  fi
  echo "raising ulimit -n from $slow_nofile to $want for slowhttptest (it needs more than $CONNS descriptors)" >&2
  slow_nofile=$want
fi
PROXY_NOFILE=${PROXY_NOFILE:-$proxy_nofile}
# The peers (nginx, HAProxy) size their own limits within the hard one.
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
peer_nofile=$((hard < 40000 ? hard : 40000))

# With UPSTREAM_READS_BODY=1 the upstream reads a request's whole body before it answers (a
# mirror subrequest that needs it), as an application taking uploads does; else it answers a
# POST at once (405) and discards the body, as a server of static files does.
upstream_reads_body() {
  [ -n "${UPSTREAM_READS_BODY:-}" ] || return 0
  echo "    client_max_body_size 2m;"
  echo "    location / { mirror /body; mirror_request_body on; }"
  echo "    location = /body { internal; return 204; }"
}

# The upstream: nginx serving a small page. Its workers may run as another user: the page and
# the directories to it are made readable.
chmod 755 "$work"
mkdir -p "$work/www" "$work/up"
printf '<!doctype html>\n<title>slow clients</title>\n<p>A small page from the upstream.</p>\n' >"$work/www/index.html"
chmod -R a+rX "$work/www"
# nginx's logs and temporary files, under $work/$1.
nginx_paths() {
  for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $work/$1;"; done
  echo "  access_log off;"
}
cat >"$work/upstream.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $peer_nofile;
pid $work/upstream.pid;
error_log $work/up/error.log error;
events { worker_connections 16000; }
http {
$(nginx_paths up)
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP backlog=4096;
    root $work/www;
$(upstream_reads_body)
  }
}
EOF
nginx -c "$work/upstream.conf" -g 'daemon off;' &
pids+=($!)
wait_port "$UP"

# The proxy under test, on $PX; its processes' pids go to PROXY_PIDS.
case $PROXY in
  nginx)
    name=nginx
    mkdir -p "$work/px"
    cat >"$work/proxy-nginx.conf" <<EOF
worker_processes auto;
worker_rlimit_nofile $peer_nofile;
pid $work/proxy-nginx.pid;
error_log $work/px/error.log error;
events { worker_connections 16000; }
http {
$(nginx_paths px)
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$PX;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
    nginx -c "$work/proxy-nginx.conf" -g 'daemon off;' &
    pids+=($!)
    ;;
  haproxy)
    name=haproxy
    cat >"$work/haproxy.cfg" <<EOF
global
  maxconn $(((peer_nofile - 200) / 2))
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s
frontend fe
  bind 127.0.0.1:$PX
  default_backend be
backend be
  server up 127.0.0.1:$UP
EOF
    haproxy -f "$work/haproxy.cfg" -db &
    pids+=($!)
    ;;
  *)
    [ -x "$PROXY" ] || { echo "PROXY=$PROXY is not an executable (build it, or give PROXY=path, nginx or haproxy)" >&2; exit 1; }
    name="switchyard ($PROXY)"
    {
      echo "listen: 127.0.0.1:$PX"
      echo "admin: { listen: 127.0.0.1:$PX_ADMIN }"
      [ -n "${PROXY_LIMITS:-}" ] && echo "limits: $PROXY_LIMITS"
      echo "routes:"
      echo "  - name: page"
      echo "    tracks:"
      echo "      - { name: stable, endpoints: [\"127.0.0.1:$UP\"], weight: 100 }"
    } >"$work/switchyard.yaml"
    # `exec` keeps the pid: the proxy itself, with its own descriptor limit.
    RUST_LOG=${RUST_LOG:-warn} bash -c '{ [ -z "$2" ] || ulimit -n "$2"; } && ulimit -Sn "$1" && shift 2 && exec "$@"' \
      _ "$PROXY_NOFILE" "${PROXY_NOFILE_HARD:-}" \
      "$PROXY" --config "$work/switchyard.yaml" ${WORKERS:+--workers "$WORKERS"} >"$work/proxy.log" 2>&1 &
    pids+=($!)
    ;;
esac
PROXY_MAIN=${pids[-1]}
wait_port "$PX"
sleep 0.5
PROXY_PIDS="$PROXY_MAIN $( (pgrep -P "$PROXY_MAIN" || true) | tr "\n" " ")"
# The largest soft limit among the proxy's processes (nginx's workers set their own).
proxy_limit=$(for p in $PROXY_PIDS; do awk '/^Max open files/ {print $4}' "/proc/$p/limits"; done | sort -n | tail -1)
curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PX/" || { echo "the proxy does not serve GET /" >&2; exit 1; }

# probe COUNT OUT: COUNT fresh connections, one every 0.25 s, each `GET /` with a 2 s limit; a
# line per probe: curl's exit code, the status, the total time.
probe() {
  local n=$1 out=$2 probes=()
  : >"$out"
  for _ in $(seq 1 "$n"); do
    { r=$(curl -s -o /dev/null --max-time 2 -w '%{http_code} %{time_total}' "http://127.0.0.1:$PX/") && rc=0 || rc=$?
      echo "$rc $r" >>"$out"; } &
    probes+=($!)
    sleep 0.25
  done
  wait "${probes[@]}" || true
}

# The probes of OUT answered 2xx within 2 s.
answered() { awk '$1 == 0 && $2 ~ /^2/ && $3 <= 2 {n++} END {print n + 0}' "$1"; }

# What the other probes of OUT got: timeouts, connection errors, statuses.
failures() {
  awk '!($1 == 0 && $2 ~ /^2/ && $3 <= 2) {
         k = $1 == 28 ? "timeout" : $1 == 7 ? "refused" : $1 == 52 ? "empty reply" : $1 == 56 ? "reset" : \
             $1 != 0 ? "curl exit " $1 : $2 ~ /^2/ ? "late 2xx" : $2
         n[k]++ }
       END { s = ""; for (k in n) s = s (s == "" ? "" : ", ") n[k] " " k; print s == "" ? "none" : s }' "$1"
}

# Every second until the file $1 exists (or 10 minutes pass): the proxy's descriptors, RSS,
# established downstream and upstream connections.
sample() {
  local stop=$1
  for _ in $(seq 1 600); do
    [ -e "$stop" ] && return 0
    local fds=0
    for p in $PROXY_PIDS; do fds=$((fds + $(ls "/proc/$p/fd" 2>/dev/null | wc -l))); done
    echo "$fds $(rss_kb $PROXY_PIDS) $(ss -Htn state established "( sport = :$PX )" | wc -l)" \
      "$(ss -Htn state established "( dport = :$UP )" | wc -l)"
    sleep 1
  done
}

# The proxy's WARN and ERROR lines after line $1 of its log, counted by message (Switchyard only).
warnings() {
  [ -f "$work/proxy.log" ] || { echo "-"; return; }
  tail -n +$(($1 + 1)) "$work/proxy.log" | sed 's/\x1b\[[0-9;]*m//g' | awk '$2 == "WARN" || $2 == "ERROR"' |
    sed -E 's/^[^ ]+ +[A-Z]+ +[^ ]+ //; s/(peer|file)=[^ ]+ ?//g' | sort | uniq -c | sort -rn | head -3 |
    awk '{n = $1; $1 = ""; s = s (s == "" ? "" : "; ") n " ×" $0} END {print s == "" ? "none" : s}'
}

# Waits (60 s at most) until the attack's connections to the proxy have closed.
settle() {
  for _ in $(seq 1 120); do
    [ "$(ss -Htn state established "( sport = :$PX )" | wc -l)" -lt 5 ] && break
    sleep 0.5
  done
  sleep 1
}

rows=()
for run in $(seq 1 "$RUNS"); do
  for attack in $ATTACKS; do
    case $attack in
      H) label="slow headers (-H)" ;;
      B) label="slow body (-B)" ;;
      HB) label="both at once (-H and -B)" ;;
      *) echo "unknown attack $attack (H, B, or HB for both at once)" >&2; exit 1 ;;
    esac
    settle
    rm -f "$work/stop"
    sample "$work/stop" >"$work/samples" &
    sampler=$!
    before=$(ticks $PROXY_PIDS)
    log_from=$( [ -f "$work/proxy.log" ] && wc -l <"$work/proxy.log" || echo 0)
    # Bounded twice: by -l, and by timeout should slowhttptest hang.
    # HB: one slowhttptest for each, at once.
    slow=()
    for letter in $(echo "$attack" | grep -o .); do
      bash -c 'ulimit -n "$1" && shift && exec "$@"' _ "$slow_nofile" \
        timeout $((DURATION + 30)) slowhttptest "-$letter" -c "$CONNS" -r "$RATE" -i 5 -x 24 -s 1000000 \
        -l "$DURATION" -p 3 -u "http://127.0.0.1:$PX/" >"$work/slowhttptest-$letter.log" 2>&1 &
      slow+=($!)
      pids+=($!)
    done
    probe $((DURATION * 4)) "$work/during"
    wait "${slow[@]}" || true
    after=$(ticks $PROXY_PIDS)
    touch "$work/stop"
    wait "$sampler" || true
    # Right after the attack's connections closed: back to normal?
    sleep 0.5
    probe 10 "$work/after"
    n=$(wc -l <"$work/during")
    ok=$(answered "$work/during")
    ok_after=$(answered "$work/after")
    read -r fds rss down up < <(awk '{for (i = 1; i <= 4; i++) if ($i > m[i]) m[i] = $i} END {print m[1] + 0, m[2] + 0, m[3] + 0, m[4] + 0}' "$work/samples")
    held=0
    for letter in $(echo "$attack" | grep -o .); do
      c=$(sed 's/\x1b\[[0-9;]*m//g' "$work/slowhttptest-$letter.log" | awk '/^connected:/ {c = $2} END {print c + 0}')
      held=$((held + c))
    done
    cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v d="$DURATION" 'BEGIN {printf "%.0f%%", t / hz / d * 100}')
    rows+=("$(printf '| %s | %s | %s | %s | %s | %s | %s | %s MiB | %s | %s | %s | %s | %s |' \
      "$label" "$n" "$ok" "$(awk -v a="$ok" -v n="$n" 'BEGIN {printf "%.0f%%", n ? a / n * 100 : 0}')" \
      "$([ "$ok_after" -eq 10 ] && echo "normal (10/10)" || echo "NOT normal ($ok_after/10)")" \
      "$(failures "$work/during")" "$fds" "$((rss / 1024))" "$down" "$up" "$held" "$cpu" "$(warnings "$log_from")")")
    echo "run $run, $label: $ok of $n probes answered within 2 s; after: $ok_after/10; $(failures "$work/during")" >&2
  done
done

{
  echo "| attack | probes | answered 2xx within 2 s | % | after the attack | failed probes | proxy fds (peak) | proxy RSS (peak) | downstream conns (peak) | upstream conns (peak) | slow conns open at the end | proxy CPU (of one core) | proxy log: WARN/ERROR |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Proxy: $name, ulimit -n $proxy_limit${WORKERS:+, --workers $WORKERS}${PROXY_LIMITS:+, limits: $PROXY_LIMITS}; upstream: nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), a static page${UPSTREAM_READS_BODY:+ that reads every request body whole before it answers}."
  echo "Attack: slowhttptest -H or -B -c $CONNS -r $RATE -i 5 -x 24 -s 1000000 -l $DURATION -p 3 (ulimit -n $slow_nofile for slowhttptest alone)."
  echo "Probe: a fresh connection every 0.25 s during the attack, curl --max-time 2 GET /; then 10 more right after it."
  echo "Machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r), $(date -u +%Y-%m-%d)."
} | if [ -n "${OUT:-}" ]; then tee "$OUT"; else cat; fi
