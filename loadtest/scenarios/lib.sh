# Shared by the scenario scripts (sourced, not run): process cleanup, port waits, and CPU time
# and memory read from /proc.

# Installs, from Debian, the packages of the commands that are missing; each argument is
# `command:package`, e.g. `need wrk:wrk nginx:nginx-light`.
need() {
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Processes started by the scenario, killed on exit with the work directory.
pids=()
work=$(mktemp -d)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Waits until something listens on 127.0.0.1:$1 (10 s at most).
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 did not open" >&2
  exit 1
}

# User and system clock ticks of the given processes, as "USER SYSTEM".
user_system_ticks() {
  local user=0 system=0
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    set -- $(sed 's/^.*) //' "/proc/$p/stat")
    user=$((user + ${12}))
    system=$((system + ${13}))
  done
  echo "$user $system"
}

# User plus system clock ticks of the given processes.
ticks() {
  local t
  t=$(user_system_ticks "$@")
  echo $((${t% *} + ${t#* }))
}
HZ=$(getconf CLK_TCK)

# Resident memory of the given processes, KiB.
rss_kb() {
  local total=0
  for p in "$@"; do
    [ -r "/proc/$p/status" ] || continue
    total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
  done
  echo "$total"
}

# RSS of the given processes while 1,000 keep-alive connections to 127.0.0.1:$1 are open, each
# having served one request.
with_conns_rss() {
  local port=$1
  shift
  python3 - "$port" <<'PY' &
import socket, sys, time
port = int(sys.argv[1])
conns = []
for i in range(1000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nx-user-id: u%d\r\n\r\n" % i)
    s.recv(4096)
    conns.append(s)
open("/dev/shm/switchyard-conns-%d" % port, "w").close()
time.sleep(30)
PY
  local holder=$!
  for _ in $(seq 1 600); do [ -e "/dev/shm/switchyard-conns-$port" ] && break; sleep 0.05; done
  rss_kb "$@"
  kill "$holder" 2>/dev/null || true
  wait "$holder" 2>/dev/null || true
  rm -f "/dev/shm/switchyard-conns-$port"
}

# The median of whitespace-separated numbers on stdin.
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# Starts the two benchmark upstreams (stable on $1, canary on $2) from target/release; the
# stable one's pid goes to UPSTREAM_PID. UPSTREAM_HEADERS (minimal, nginx or 12) and BODY (bytes)
# choose their answer; unset, it is `ok\n` with x-upstream, date and content-length.
start_upstreams() {
  local answer=()
  case ${UPSTREAM_HEADERS:-minimal} in
    minimal | nginx) answer+=(--headers "${UPSTREAM_HEADERS:-minimal}") ;;
    12 | twelve) answer+=(--headers twelve) ;;
    *) echo "UPSTREAM_HEADERS=$UPSTREAM_HEADERS: expected minimal, nginx or 12" >&2; exit 1 ;;
  esac
  [ -n "${BODY:-}" ] && answer+=(--body-size "$BODY")
  target/release/switchyard-loadtest upstream --listen "127.0.0.1:$1" --name stable "${answer[@]}" &
  pids+=($!)
  UPSTREAM_PID=$!
  target/release/switchyard-loadtest upstream --listen "127.0.0.1:$2" --name canary "${answer[@]}" &
  pids+=($!)
}

# The CPU benchmarks' table, listening on $1 with its admin API on $2, in front of the stable
# ($3) and canary ($4) upstreams: a sticky key, two header rules and a 95/5 split. STICKY=0
# leaves the sticky key out (each request is split on its own).
bench_table() {
  cat <<EOF
listen: 127.0.0.1:$1
admin: { listen: 127.0.0.1:$2 }
routes:
  - name: bench
    match: { pathPrefix: / }
    tracks:
      - { name: stable, endpoints: ["127.0.0.1:$3"], weight: 95 }
      - { name: canary, endpoints: ["127.0.0.1:$4"], weight: 5 }
    rules:
      - match: { headers: [{ name: x-canary, value: "true" }] }
        track: canary
      - match: { headers: [{ name: x-environment, value: stable }] }
        track: stable
EOF
  [ "${STICKY:-1}" = 0 ] || echo "    sticky: { header: x-user-id }"
}
