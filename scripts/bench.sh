#!/usr/bin/env bash
# End-to-end replication benchmark on real servers, in one run:
#   a Redis master loaded by redis-benchmark (pipelined SETEX / INCR / HSET+EXPIRE / APPEND on
#   keys with TTLs), one replica directly on the master and one through pika-ttl-proxy.
# Prints one table: time for each replica to acknowledge everything, commands/s, the ratio
# proxied/direct, the proxy's per-entry time and per-read hold time (p50/p99/p99.9 from its
# histograms), CPU and RSS.
# Then the added latency master → replica at a fixed 100 k cmds/s (benches/added_latency.rs):
#   p50/p99/p99.9/max of (arrival through the proxy − arrival direct) and, in the same run, of
#   (arrival through a plain TCP forwarder − arrival direct), plus proxy − forwarder per
#   percentile, rewriting on and with every family off; ADDED_LATENCY_SECONDS (default 5) per case;
#   ADDED_LATENCY_RT=50 runs that part with every process at one real-time priority (root), which
#   takes most of the host scheduler's noise out of the comparison.
# Bounded: N commands (default 2,000,000; BENCH_N to change). Loopback only; every process it
# starts is stopped on exit.
# With PIKA_BIN=/path/to/pika it benchmarks real Pika servers instead (scripts/bench-pika.sh:
# a Pika master under redis-benchmark load, one replica direct, one through the proxy).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PIKA_BIN:-}" ]; then
  # shellcheck source=scripts/bench-pika.sh
  . scripts/bench-pika.sh
fi

N=${BENCH_N:-2000000}
PER=$((N / 5))

for tool in redis-server redis-cli redis-benchmark python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required (apt-get install redis-server redis-tools python3)"; exit 2; }
done
cargo build --release --locked >/dev/null 2>&1 || { echo "error: cargo build --release failed"; exit 2; }
BIN=target/release/pika-ttl-proxy

DIR=$(mktemp -d /tmp/pika-ttl-proxy-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do
    { kill -9 "$p" && wait "$p"; } 2>/dev/null || true
  done
  rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
M=$(free_port); P=$(free_port); A=$(free_port); RD=$(free_port); RP=$(free_port)

start_redis() { # port name [extra...]
  local port=$1 name=$2; shift 2
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" \
    --logfile "$DIR/$name.log" "$@" &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "error: redis-server $name did not start"; exit 1
}

start_redis "$M" master --repl-backlog-size 512mb --client-output-buffer-limit "replica 0 0 0"
"$BIN" redis --listen "127.0.0.1:$P" --master "127.0.0.1:$M" --admin "127.0.0.1:$A" \
  --state-dir "$DIR/state" --log-level warn 2>"$DIR/proxy.log" &
PROXY=$!; PIDS+=("$PROXY")
for _ in $(seq 100); do redis-cli -p "$P" ping >/dev/null 2>&1 && break; sleep 0.05; done
start_redis "$RD" direct --replicaof 127.0.0.1 "$M"
start_redis "$RP" proxied --replicaof 127.0.0.1 "$P"
for port in "$RD" "$RP"; do
  for _ in $(seq 200); do
    redis-cli -p "$port" info replication | grep -q master_link_status:up && break; sleep 0.05
  done
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CPU0=$(cpu_ticks "$PROXY")
T0=$(date +%s.%N)
# Five pipelined workloads, run one after another; every key has a TTL, so INCR/HSET/APPEND
# on them are rewritten by the proxy.
redis-benchmark -p "$M" -n "$PER" -P 64 -r 100000 -q SETEX "c:__rand_int__" 3600 1 >/dev/null
redis-benchmark -p "$M" -n "$PER" -P 64 -r 100000 -q INCR "c:__rand_int__" >/dev/null
redis-benchmark -p "$M" -n "$PER" -P 64 -r 100000 -q SETEX "s:__rand_int__" 3600 abc >/dev/null
redis-benchmark -p "$M" -n "$PER" -P 64 -r 100000 -q APPEND "s:__rand_int__" x >/dev/null
redis-benchmark -p "$M" -n "$PER" -P 64 -r 100000 -q HINCRBY "h:__rand_int__" f 1 >/dev/null
T_LOAD=$(date +%s.%N)
TARGET=$(redis-cli -p "$M" info replication | awk -F: '/^master_repl_offset/ {print $2}' | tr -d '\r')

# Poll the master's view of each replica's acknowledged offset (the proxied one is translated).
python3 - "$M" "$RD" "$RP" "$TARGET" "$T0" > "$DIR/catchup" <<'EOF'
import subprocess, sys, time
m, rd, rp, target, t0 = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
done = {}
deadline = time.time() + 240
while len(done) < 2 and time.time() < deadline:
    info = subprocess.run(["redis-cli", "-p", m, "info", "replication"], capture_output=True, text=True).stdout
    for line in info.splitlines():
        if line.startswith("slave") and "offset=" in line:
            f = dict(kv.split("=") for kv in line.split(":", 1)[1].strip().split(","))
            port = f["port"]
            if int(f["offset"]) >= target and port not in done:
                done[port] = time.time() - t0
    time.sleep(0.02)
print(done.get(rd, -1), done.get(rp, -1))
EOF
read -r T_DIRECT T_PROXIED < "$DIR/catchup"
CPU1=$(cpu_ticks "$PROXY")
HZ=$(getconf CLK_TCK)
RSS=$(awk '/VmRSS/ {print $2}' "/proc/$PROXY/status")
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$PROXY/status")
curl -s "http://127.0.0.1:$A/metrics" > "$DIR/metrics" 2>/dev/null || \
  "$BIN" families list --admin "127.0.0.1:$A" >/dev/null  # curl missing: metrics below stay empty

python3 - "$DIR/metrics" "$N" "$T0" "$T_LOAD" "$T_DIRECT" "$T_PROXIED" "$CPU0" "$CPU1" "$HZ" "$RSS" "$HWM" "$TARGET" <<'EOF'
import sys
path, n, t0, tload, td, tp, c0, c1, hz, rss, hwm, target = sys.argv[1:]
n = int(n); td = float(td); tp = float(tp); load = float(tload) - float(t0)
histograms = {"pika_ttl_proxy_entry_duration_seconds_bucket": [], "pika_ttl_proxy_hold_seconds_bucket": []}
rewritten = passed = 0.0
for line in open(path):
    name = line.split("{")[0]
    if name in histograms:
        le = line.split('le="')[1].split('"')[0]
        histograms[name].append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    if line.startswith("pika_ttl_proxy_entries_total"):
        v = float(line.split()[-1])
        if 'outcome="rewritten"' in line: rewritten += v
        elif 'outcome="passed"' in line: passed += v
def quantiles(name, above):
    buckets = sorted(histograms[name])
    count = buckets[-1][1] if buckets else 0
    def q(p):
        for le, c in buckets:
            if count and c >= p * count:
                if le == float("inf"):
                    return above
                return "≤ %g µs" % (le * 1e6) if le < 1e-3 else "≤ %g ms" % (le * 1e3)
        return "n/a"
    return f"{q(0.5)} / {q(0.99)} / {q(0.999)}"
cpu = (int(c1) - int(c0)) / int(hz)
rows = [
    ("commands (redis-benchmark, 5 pipelined kinds)", f"{n:,}"),
    ("master load time", f"{load:.2f} s ({n/load:,.0f} cmds/s)"),
    ("replication stream (master offset)", f"{int(target)/1e6:.1f} MB"),
    ("direct replica caught up after", f"{td:.2f} s ({n/td:,.0f} cmds/s)" if td > 0 else "not caught up"),
    ("proxied replica caught up after", f"{tp:.2f} s ({n/tp:,.0f} cmds/s)" if tp > 0 else "not caught up"),
    ("throughput ratio proxied / direct", f"{td/tp:.3f}" if td > 0 and tp > 0 else "n/a"),
    ("entries rewritten / passed by the proxy", f"{rewritten:,.0f} / {passed:,.0f}"),
    ("proxy time per entry p50 / p99 / p99.9 (histogram bucket bound)", quantiles("pika_ttl_proxy_entry_duration_seconds_bucket", "> 10 ms")),
    ("proxy hold per read p50 / p99 / p99.9 (read → written to replica)", quantiles("pika_ttl_proxy_hold_seconds_bucket", "> 1 s")),
    ("proxy CPU during the run", f"{cpu:.2f} s ({cpu/max(tp,1e-9)*100:.0f}% of one core over the catch-up)"),
    ("proxy RSS now / peak", f"{int(rss)/1024:.0f} MiB / {int(hwm)/1024:.0f} MiB"),
]
w = max(len(r[0]) for r in rows)
print("pika-ttl-proxy end-to-end benchmark (Redis relay, real redis-server, loopback)")
for k, v in rows:
    print(f"  {k:<{w}}  {v}")
EOF

# The Pika relay, with the test protocol peers as master and replica (no real Pika here):
# items/s to a replica directly and through the proxy, in the same run; then log → arrival
# latency at a fixed 100 k items/s, directly and through the proxy (one measurement at a time).
echo
cargo test --release --locked --test pika_throughput -- --ignored --nocapture --test-threads 1 2>/dev/null \
  | grep -oE 'pika relay (latency )?\(protocol peers\).*' || echo "pika relay measurement failed (cargo test --release --test pika_throughput -- --ignored)"

# Added latency at a fixed rate, on its own master, proxy and baseline forwarder (the processes
# above are idle by now). The bench finds the release binary built at the top of this script.
# Four lines per case: "added latency, <case>: …" (through the proxy), "added latency via
# forwarder, <case>: …", "added latency difference proxy − forwarder, <case>: …" and "proxy hold
# time …, <case>: …" (the proxy's own histogram over the case).
echo
cargo bench --locked --bench added_latency 2>/dev/null \
  | grep -E '^((pika-ttl-proxy )?added latency|proxy hold time)' \
  || echo "added latency measurement failed (cargo bench --bench added_latency)"

# The same two latency measurements with the hop under test on a core of its own: the proxy
# (and the Redis bench's forwarder) under `taskset -c 1`, everything else under `taskset -c 0`.
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  echo
  echo "pinned: proxy and forwarder on CPU 1, masters, replicas and load on CPU 0"
  PIKA_TTL_PROXY_WRAPPER="taskset -c 1" taskset -c 0 \
    cargo test --release --locked --test pika_throughput pika_relay_latency_at_a_fixed_rate -- --ignored --nocapture --test-threads 1 2>/dev/null \
    | grep -oE 'pika relay latency \(protocol peers\).*' | sed 's/^/pinned: /' \
    || echo "pinned pika relay latency measurement failed"
  ADDED_LATENCY_HOP_CPU=1 taskset -c 0 cargo bench --locked --bench added_latency 2>/dev/null \
    | grep -E '^((pika-ttl-proxy )?added latency|proxy hold time)' | sed 's/^/pinned: /' \
    || echo "pinned added latency measurement failed"
fi
