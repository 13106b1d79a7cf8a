#!/usr/bin/env bash
# Instructions the balancer spends per proxied GET, counted by callgrind (repeatable where
# wall-clock runs on a shared 2-core machine are not).
#
#   docs/perf/callgrind_get.sh BALANCER_BINARY [OUT]
#
# Two nginx backends as in ../shared/bench/proxy_bench.py, one balancer worker under
# callgrind, wrk -c8 for 8 s after a 3 s warm-up; counters are zeroed after the warm-up and
# dumped at the end. For readable profiles build with symbols:
#   CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
#     cargo build --release --target x86_64-unknown-linux-musl -p balancer --target-dir /tmp/prof
# Needs valgrind, nginx, wrk, curl.
set -euo pipefail
bin=${1:?usage: callgrind_get.sh BALANCER_BINARY [OUT]}
out=${2:-$(mktemp -d)/callgrind.out}
here=$(cd "$(dirname "$0")" && pwd)
bench=${BENCH_DIR:-$here/../../../shared/bench}
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
python3 - "$tmp" "$bench" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
import proxy_bench as pb
backends, _ = pb.nginx_conf(sys.argv[1], pb.BODY)
open(sys.argv[1] + "/backends.conf", "w").write(backends)
PY
# The configuration says `daemon off`.
nginx -c "$tmp/backends.conf" -p "$tmp" &
pids+=("$!")
STATIC_BACKEND="127.0.0.1:19001 127.0.0.1:19002" DYNAMIC_BACKEND="127.0.0.1:19001 127.0.0.1:19002" \
BALANCER_LISTEN=127.0.0.1:18080 BALANCER_ADMIN_LISTEN=127.0.0.1:18180 RUST_LOG=warn BALANCER_WORKERS=1 \
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" >"$tmp/valgrind.log" 2>&1 &
vg=$!
pids+=("$vg")
for _ in $(seq 100); do
    curl -s -o /dev/null http://127.0.0.1:18080/api/student && break
    sleep 0.3
done
wrk -t1 -c8 -d3s http://127.0.0.1:18080/api/student >/dev/null
callgrind_control -z "$vg" >/dev/null 2>&1
requests=$(wrk -t1 -c8 -d8s http://127.0.0.1:18080/api/student | awk '/requests in/ {print $1}')
callgrind_control -d "$vg" >/dev/null 2>&1
sleep 1
instr=$(awk '/^summary:/ {print $2}' "$out.1")
echo "requests=$requests instructions=$instr per_get=$((instr / requests)) profile=$out.1"
