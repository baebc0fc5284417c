#!/usr/bin/env bash
# Fleet scale: N proxies in one group on a 3-member etcd (in this process), for each N the time
# from a table write until every proxy confirmed it over weight changes, and the CPU and memory
# of observing every proxy once a second (switchyard-loadtest fleet-scale, feature `fleet`).
#
#   loadtest/scenarios/fleet-scale.sh     # PROXIES=10,100,500 CHANGES=20 OBSERVE_SECONDS=30 RUNS=2
#
# Needs etcd and protoc (Debian's etcd-server and protobuf-compiler; installed when missing, as
# root). Writes loadtest/results/fleet-scale.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

PROXIES=${PROXIES:-10,100,500}
CHANGES=${CHANGES:-20}
OBSERVE_SECONDS=${OBSERVE_SECONDS:-30}
RUNS=${RUNS:-2}

. loadtest/scenarios/lib.sh
need etcd:etcd-server protoc:protobuf-compiler
cargo build --release -q -p switchyard-loadtest --features fleet
# Every in-process proxy holds two listeners and a connection to each etcd member; the etcd
# members, started from here, inherit the limit too.
ulimit -n "$(ulimit -Hn)"

out=loadtest/results/fleet-scale.md
: >"$out"
for run in $(seq 1 "$RUNS"); do
  echo "## Run $run" >>"$out"
  echo >>"$out"
  target/release/switchyard-loadtest fleet-scale --proxies "$PROXIES" --changes "$CHANGES" \
    --observe-seconds "$OBSERVE_SECONDS" | tee -a "$out"
  echo >>"$out"
done
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(etcd --version | head -1), $(date +%F)." >>"$out"
echo "wrote $out"
