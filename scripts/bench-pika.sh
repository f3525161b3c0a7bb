# shellcheck shell=bash
# The real-Pika benchmark of scripts/bench.sh (sourced when PIKA_BIN names a Pika binary): a Pika
# master loaded by redis-benchmark (pipelined SETEX / INCR / HINCRBY+EXPIRE on volatile keys),
# one Pika replica directly on the master and one through pika-ttl-proxy, side by side.
# Prints: time from the start of the load until each replica holds the last write, the ratio
# direct/proxied (1.0 = the proxy costs the replica nothing), master commands/s, the proxy's CPU
# seconds per entry (utime+stime from /proc) and peak RSS (VmHWM).
# With two or more CPUs the proxy is pinned to the last CPU and every other process to the
# others (taskset), so the proxy's figures are not the scheduler's (BENCH_PIN=0: no pinning).
# On two CPUs that leaves one CPU to three Pika servers and redis-benchmark, which bounds the
# master's rate. BENCH_N commands (default 1,000,000), split over five phases.

N=${BENCH_N:-1000000}
PER=$((N / 5))

for tool in redis-cli redis-benchmark python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required (apt-get install redis-tools python3)"; exit 2; }
done
[ -x "$PIKA_BIN" ] || { echo "error: PIKA_BIN=$PIKA_BIN is not executable"; exit 2; }
PIKA_VERSION=$("$PIKA_BIN" -v 2>/dev/null | sed -n 's/^pika_version: *//p' | head -1)
PIKA_SHA=$("$PIKA_BIN" -v 2>/dev/null | sed -n 's/^pika_git_sha: *//p' | head -1 | cut -c1-8)
PIKA_MAJOR=${PIKA_VERSION%%.*}
[ -n "$PIKA_MAJOR" ] || { echo "error: $PIKA_BIN -v printed no pika_version"; exit 2; }
# BENCH_PROXY_BIN: another build of the proxy to measure (e.g. the previous commit's), as is.
if [ -n "${BENCH_PROXY_BIN:-}" ]; then
  BIN=$BENCH_PROXY_BIN
else
  cargo build --release --locked >/dev/null 2>&1 || { echo "error: cargo build --release failed"; exit 2; }
  BIN=target/release/pika-ttl-proxy
fi

CPUS=$(nproc)
# BENCH_PIN=0 leaves every process to the scheduler.
if [ "${BENCH_PIN:-1}" = 1 ] && [ "$CPUS" -ge 2 ] && command -v taskset >/dev/null; then
  PROXY_CPU=$((CPUS - 1))
  PIN_PROXY=(taskset -c "$PROXY_CPU")
  PIN_REST=(taskset -c "0-$((PROXY_CPU - 1))")
  PINNING="proxy on CPU $PROXY_CPU, Pika servers and redis-benchmark on CPU 0-$((PROXY_CPU - 1)) (taskset)"
else
  PIN_PROXY=() PIN_REST=()
  PINNING="not pinned (one CPU or no taskset)"
fi

DIR=$(mktemp -d /tmp/pika-ttl-proxy-bench.XXXXXX)
PIDS=()
cleanup() {
  # SIGKILL: a clean Pika stop takes 5-20 s and the data is thrown away.
  for p in "${PIDS[@]}"; do
    { kill -CONT "$p"; kill -9 "$p" && wait "$p"; } 2>/dev/null || true
  done
  rm -rf "$DIR"
}
trap cleanup EXIT

# A base port P with P, P+2000 and P+10001 free (Pika and the proxy listen on all three).
free_triple() {
  python3 - "$@" <<'EOF'
import random, socket, sys
taken = {int(p) for p in sys.argv[1:]}
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randint(10000, 22000)
    ports = (p, p + 2000, p + 10001)
    if not taken.intersection(ports) and all(free(q) for q in ports):
        print(p); break
EOF
}
USED=()
triple() { local p; p=$(free_triple "${USED[@]}"); USED+=("$p" $((p + 2000)) $((p + 10001))); echo "$p"; }
M=$(triple); P=$(triple); RD=$(triple); RP=$(triple); A=$(triple)

start_pika() { # port name
  local port=$1 name=$2 dir="$DIR/$2"
  mkdir -p "$dir"
  {
    echo "port : $port"
    for k in db-path log-path dump-path db-sync-path; do echo "$k : $dir/${k%-path}/"; done
    echo "pidfile : $dir/pika.pid"
    echo "daemonize : no"
    echo "network-interface : lo"
    echo "maxclients : 1000"
    echo "databases : 1"
    if [ "$PIKA_MAJOR" -ge 4 ]; then echo "db-instance-num : 3"; echo "cache-model : 0"; fi
  } >"$dir/pika.conf"
  "${PIN_REST[@]}" "$PIKA_BIN" -c "$dir/pika.conf" >"$dir/out" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 300); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "error: pika $name did not start (see $dir/out)"; exit 1
}
link_up() { redis-cli -p "$1" info replication | tr -d '\r' | grep -q '^master_link_status:up'; }

start_pika "$M" master
start_pika "$RD" direct
start_pika "$RP" proxied
"${PIN_PROXY[@]}" "$BIN" pika --listen "127.0.0.1:$P" --master "127.0.0.1:$M" --admin "127.0.0.1:$A" \
  --state-dir "$DIR/state" --log-level warn 2>"$DIR/proxy.log" &
PROXY=$!; PIDS+=("$PROXY")
for _ in $(seq 100); do "$BIN" healthcheck --admin "127.0.0.1:$A" >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$RD" slaveof 127.0.0.1 "$M" >/dev/null
redis-cli -p "$RP" slaveof 127.0.0.1 "$P" >/dev/null
for port in "$RD" "$RP"; do
  for _ in $(seq 600); do link_up "$port" && break; sleep 0.1; done
  link_up "$port" || { echo "error: replica on $port did not link up"; exit 1; }
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
CPU0=$(cpu_ticks "$PROXY")
T0=$(date +%s.%N)
# Five pipelined phases; every key written after the first phase has a TTL, so the proxy
# rewrites INCR and the second HINCRBY (a Pika 4.0 master logs INCR on a volatile key as
# pksetexat, which the proxy also rewrites).
bench() { "${PIN_REST[@]}" redis-benchmark -p "$M" -n "$PER" -P 16 -r 100000 -q "$@" >/dev/null; }
bench SETEX "c:__rand_int__" 3600 1
bench INCR "c:__rand_int__"
bench HINCRBY "h:__rand_int__" f 1
bench EXPIRE "h:__rand_int__" 3600
bench HINCRBY "h:__rand_int__" f 1
redis-cli -p "$M" set bench:last 1 >/dev/null
T_LOAD=$(date +%s.%N)

# Poll both replicas for the last write; times from the start of the load.
python3 - "$RD" "$RP" "$T0" >"$DIR/catchup" <<'EOF'
import socket, sys, time
ports, t0 = (int(sys.argv[1]), int(sys.argv[2])), float(sys.argv[3])
conns = {p: socket.create_connection(("127.0.0.1", p)) for p in ports}
done = {}
deadline = time.time() + 600
while len(done) < 2 and time.time() < deadline:
    for p, c in conns.items():
        if p in done:
            continue
        c.sendall(b"*2\r\n$6\r\nEXISTS\r\n$10\r\nbench:last\r\n")
        if c.recv(64).startswith(b":1"):
            done[p] = time.time() - t0
    time.sleep(0.005)
print(done.get(ports[0], -1), done.get(ports[1], -1))
EOF
read -r T_DIRECT T_PROXIED <"$DIR/catchup"
CPU1=$(cpu_ticks "$PROXY")
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$PROXY/status")
METRICS=$(curl -fsS "http://127.0.0.1:$A/metrics" 2>/dev/null || true)
sum_metric() { printf '%s\n' "$METRICS" | grep "^$1" | awk '{ s += $NF } END { print s + 0 }'; }
ENTRIES=$(sum_metric 'pika_ttl_proxy_entries_total')
REWRITTEN=$(sum_metric 'pika_ttl_proxy_entries_total{.*outcome="rewritten"')

python3 - "$N" "$T0" "$T_LOAD" "$T_DIRECT" "$T_PROXIED" "$CPU0" "$CPU1" "$HZ" "$HWM" "$ENTRIES" "$REWRITTEN" "$PIKA_VERSION" "$PIKA_SHA" "$PINNING" <<'EOF'
import sys
n, t0, tl, td, tp = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
cpu = (int(sys.argv[7]) - int(sys.argv[6])) / int(sys.argv[8])
hwm, entries, rewritten = int(sys.argv[9]), float(sys.argv[10]), float(sys.argv[11])
print(f"real Pika {sys.argv[12]} (git {sys.argv[13]}); {sys.argv[14]}")
print(f"load: {n} commands (SETEX, INCR, HINCRBY, EXPIRE, HINCRBY; -P 16 -r 100000) in {tl - t0:.2f} s = {n / (tl - t0):,.0f} cmds/s on the master")
print(f"{'':34}{'direct':>12}{'via proxy':>12}")
print(f"{'last write held after (s)':34}{td:>12.2f}{tp:>12.2f}")
if td > 0 and tp > 0:
    print(f"ratio direct/proxied time: {td / tp:.3f} (1.0 = the proxy adds nothing; proxied {1000 * (tp - td):+.0f} ms)")
per = entries if entries > 0 else n
print(f"proxy: {cpu:.2f} CPU-s for {per:,.0f} entries ({rewritten:,.0f} rewritten) = {1e6 * cpu / per:.2f} us per entry; peak RSS {hwm / 1024:.1f} MiB")
EOF
exit 0
