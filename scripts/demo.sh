#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions called indirectly (trap, wait_until, check)
# pika-ttl-proxy demo: a real Redis master, the proxy, one replica through the proxy and one
# directly on the master; the seed scenario (SETEX key1 10 100, then INCR key1) and a short
# workload; the replication stream before and after the proxy; master vs replicas; lag from
# /metrics; switching a rewrite family off and on through the CLI; and the immortal-key bug and
# its fix on the reference model of a replica that expires keys by its own clock.
#
# With a Pika binary (PIKA_BIN=/path/to/pika, or `pika` on PATH) it shows the bug and the fix on
# REAL Pika servers instead: a Pika master, a Pika replica directly on it and one through the
# proxy, both replicas paused across the keys' TTLs, immortal keys on the direct replica only
# (on Pika 4.0.x also SETEX lost on the direct replica and kept through the proxy). Without
# one, the Redis + reference-model demo above runs as the fallback.
#
# Usage: scripts/demo.sh            (as root on a fresh Debian machine it installs what it needs)
#   PIKA_BIN=/opt/pika/bin/pika scripts/demo.sh   the real-Pika demo (Pika 3.5.x or 4.0.x)
#   KEEP_DEMO_DIR=1 scripts/demo.sh   keeps the temporary directory (logs, streams) afterwards.
# Exit status: 0 when every check passed, 1 when one failed, 2 when the demo could not run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# The proxy and its CLI read PIKA_TTL_PROXY_* variables; the demo sets everything by flags.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^PIKA_TTL_PROXY_' || true)
BIN="$ROOT/target/release/pika-ttl-proxy"

# Seconds a replica of the model applies each entry after the master sent it (a pause, a slow
# disk, a network stall). Longer than the workload's TTLs, so unrewritten entries go wrong.
MODEL_DELAY_MS=30000

# ----------------------------------------------------------------------------------------------
# Presentation
if [ -t 1 ]; then
  BOLD=$'\e[1m' DIM=$'\e[2m' GREEN=$'\e[32m' RED=$'\e[31m' CYAN=$'\e[36m' OFF=$'\e[0m'
else
  BOLD='' DIM='' GREEN='' RED='' CYAN='' OFF=''
fi
PASSED=0
FAILED=0
FAILED_CHECKS=()

section() { printf '\n%s━━ %s %s%s\n' "$BOLD$CYAN" "$1" "$(printf '━%.0s' $(seq 1 $((70 - ${#1}))))" "$OFF"; }
say() { printf '  %s\n' "$*"; }
dim() { printf '  %s%s%s\n' "$DIM" "$*" "$OFF"; }
pass() { PASSED=$((PASSED + 1)); printf '  %sPASS%s  %s\n' "$GREEN$BOLD" "$OFF" "$*"; }
fail() {
  FAILED=$((FAILED + 1))
  FAILED_CHECKS+=("$*")
  printf '  %sFAIL%s  %s\n' "$RED$BOLD" "$OFF" "$*"
}
check() { # check "description" command...: PASS or FAIL on the command's status
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
die() {
  printf '%sdemo: %s%s\n' "$RED" "$*" "$OFF" >&2
  exit 2
}

# ----------------------------------------------------------------------------------------------
# What the demo needs: redis-server and redis-cli (7.0+: PXAT, PEXPIRETIME), curl, a release
# build of the proxy.
section "Setup"
# A real Pika server when one is given (PIKA_BIN, else `pika` on PATH); otherwise the fallback.
PIKA_BIN=${PIKA_BIN:-$(command -v pika 2>/dev/null || true)}
if [ -n "$PIKA_BIN" ]; then
  [ -x "$PIKA_BIN" ] || die "PIKA_BIN=$PIKA_BIN is not an executable file"
  PIKA_VERSION=$("$PIKA_BIN" -v 2>/dev/null | sed -n 's/^pika_version: *//p' | head -1)
  PIKA_SHA=$("$PIKA_BIN" -v 2>/dev/null | sed -n 's/^pika_git_sha: *//p' | head -1 | cut -c1-8)
  [ -n "$PIKA_VERSION" ] || die "$PIKA_BIN -v printed no pika_version (is it Pika?)"
  PIKA_MAJOR=${PIKA_VERSION%%.*}
  say "real Pika: $PIKA_BIN, pika_version $PIKA_VERSION (git $PIKA_SHA)"
fi
need_pkgs=()
[ -n "$PIKA_BIN" ] || command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_pkgs+=(redis-tools)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "missing ${need_pkgs[*]}; run as root to install them, or install them first"
  say "installing ${need_pkgs[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  # Debian starts a redis-server service on 6379; the demo uses its own ports.
  (service redis-server stop || true) >/dev/null 2>&1
fi
if [ -z "$PIKA_BIN" ]; then
  redis_version=$(redis-server --version | sed -n 's/.*v=\([0-9][0-9.]*\).*/\1/p')
  [ "${redis_version%%.*}" -ge 7 ] 2>/dev/null ||
    die "redis-server $redis_version is too old: the demo needs Redis 7 (PXAT, PEXPIRETIME)"
  say "redis-server $redis_version, $(redis-cli --version)"
  say "${BOLD}no Pika binary given: this is the FALLBACK demo${OFF} (Redis servers + the reference model of a"
  say "Pika replica). For the real thing: PIKA_BIN=/path/to/pika scripts/demo.sh, with a binary from"
  say "the official release tarball (github.com/OpenAtomFoundation/pika/releases) or image (pikadb/pika)."
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  # Only a toolchain at least as new as the crate's rust-version can build it.
  need_rust=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    candidate=$(apt-cache policy rustc 2>/dev/null | sed -n 's/ *Candidate: *\([0-9]*\.[0-9]*\).*/\1/p')
    if [ -n "$candidate" ] && [ "$(printf '%s\n%s\n' "$need_rust" "$candidate" | sort -V | head -1)" = "$need_rust" ]; then
      say "installing cargo $candidate (apt-get)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo >/dev/null
    fi
  fi
  command -v cargo >/dev/null 2>&1 ||
    die "no Rust toolchain: install Rust $need_rust or newer (rustup), then run this again"
fi
say "building the proxy: cargo build --release --locked"
build_started=$SECONDS
cargo build --release --locked 2>&1 | sed 's/^/    /'
[ "${PIPESTATUS[0]}" -eq 0 ] || die "the build failed"
[ -x "$BIN" ] || die "the build did not produce $BIN"
say "build done in $((SECONDS - build_started)) s; the demo itself starts now"
demo_started=$SECONDS

# ----------------------------------------------------------------------------------------------
# Processes, ports, cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pika-ttl-proxy-demo.XXXXXX")
PIDS=()
PIKA_PIDS=()
cleanup() {
  local status=$?
  # Pika servers: SIGKILL (after SIGCONT, one may be paused). A clean Pika stop takes 5-20 s and
  # their data directories are thrown away.
  for pid in "${PIKA_PIDS[@]}"; do
    kill -CONT "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP_DEMO_DIR:-0}" = 1 ] || [ "$status" -ne 0 ]; then
    printf '\n  logs and recorded streams kept in %s\n' "$WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

USED_PORTS=" "
# Ports below the kernel's ephemeral range, so no outgoing connection holds one of them.
EPHEMERAL_LOW=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$EPHEMERAL_LOW" -gt 11000 ] || EPHEMERAL_LOW=32768
free_port() { # a loopback port nothing listens on and this demo has not taken yet
  local port
  for _ in $(seq 1 200); do
    port=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
    case "$USED_PORTS" in *" $port "*) continue ;; esac
    if ! (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      USED_PORTS+="$port "
      echo "$port"
      return 0
    fi
  done
  die "no free loopback port found"
}

NAMES=()
wait_until() { # wait_until SECONDS what command...: poll every 100 ms; stop if a process died
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    for i in "${!PIDS[@]}"; do
      kill -0 "${PIDS[i]}" 2>/dev/null || die "${NAMES[i]} exited while waiting for $what (logs: $WORK)"
    done
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${limit}s waiting for $what (logs: $WORK)"
    sleep 0.1
  done
}

rcli() { # rcli PORT command...: one command, raw output
  local port=$1
  shift
  redis-cli -h 127.0.0.1 -p "$port" --raw "$@"
}

[ -z "$PIKA_BIN" ] || . "$ROOT/scripts/demo-pika.sh"  # runs the real-Pika demo and exits

MASTER=$(free_port)
PROXY=$(free_port)
ADMIN=$(free_port)
VIA_PROXY=$(free_port)
DIRECT=$(free_port)
ADMIN_ADDR="127.0.0.1:$ADMIN"

start_redis() { # start_redis NAME PORT [extra args]
  local name=$1 port=$2
  shift 2
  mkdir -p "$WORK/$name"
  # No snapshots, no AOF; a replica that is not waiting 5 s for more replicas before a sync.
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --repl-diskless-sync-delay 0 --dir "$WORK/$name" --logfile "$WORK/$name/redis.log" "$@" &
  PIDS+=($!) NAMES+=("redis-server $name (port $port, log $WORK/$name/redis.log)")
}

start_capture() { # start_capture NAME PORT: redis-cli --replica, each line stamped with its ms
  local name=$1 port=$2
  mkfifo "$WORK/$name.fifo"
  redis-cli -h 127.0.0.1 -p "$port" --replica >"$WORK/$name.fifo" 2>&1 &
  PIDS+=($!) NAMES+=("redis-cli --replica on port $port")
  while IFS= read -r line; do
    printf '%s %s\n' "$(date +%s%3N)" "$line"
  done <"$WORK/$name.fifo" >"$WORK/$name.stream" &
  PIDS+=($!) NAMES+=("the $name stream timestamper")
}

link_up() { rcli "$1" INFO replication | grep -q '^master_link_status:up'; }
proxy_ready() { curl -fsS "http://$ADMIN_ADDR/readyz"; }
has_line() { grep -qF -- "$2" "$WORK/$1.stream"; }

say "temporary directory $WORK"
start_redis master "$MASTER"
wait_until 10 "the master" rcli "$MASTER" PING

"$BIN" redis --listen "127.0.0.1:$PROXY" --master "127.0.0.1:$MASTER" \
  --state-dir "$WORK/proxy-state" --admin "$ADMIN_ADDR" --log-format text --log-level info \
  >"$WORK/proxy.log" 2>&1 &
PIDS+=($!) NAMES+=("pika-ttl-proxy (log $WORK/proxy.log)")
wait_until 10 "the proxy's admin API" "$BIN" healthcheck --admin "$ADMIN_ADDR"

start_redis replica-via-proxy "$VIA_PROXY" --replicaof 127.0.0.1 "$PROXY"
start_redis replica-direct "$DIRECT" --replicaof 127.0.0.1 "$MASTER"
wait_until 20 "the replica behind the proxy to sync" link_up "$VIA_PROXY"
wait_until 20 "the direct replica to sync" link_up "$DIRECT"
wait_until 20 "the proxy to report ready" proxy_ready

start_capture proxied "$PROXY"
start_capture direct "$MASTER"
wait_until 20 "redis-cli --replica through the proxy" has_line proxied "SYNC done"
wait_until 20 "redis-cli --replica on the master" has_line direct "SYNC done"
# redis-cli starts reading the stream only after its first ACK, a second after the sync.
wait_until 20 "redis-cli --replica through the proxy to start reading" has_line proxied "REPLCONF ACK"
wait_until 20 "redis-cli --replica on the master to start reading" has_line direct "REPLCONF ACK"

cat <<EOF

  ${BOLD}What runs (all on loopback, in $WORK)${OFF}
    Redis master                 127.0.0.1:$MASTER
    pika-ttl-proxy redis         127.0.0.1:$PROXY   → master 127.0.0.1:$MASTER, admin http://$ADMIN_ADDR
    replica A (through proxy)    127.0.0.1:$VIA_PROXY   replicaof 127.0.0.1 $PROXY
    replica B (direct)           127.0.0.1:$DIRECT   replicaof 127.0.0.1 $MASTER
    stream "after"  (proxied)    redis-cli -p $PROXY --replica    → proxied.stream
    stream "before" (direct)     redis-cli -p $MASTER --replica    → direct.stream
EOF
pass "master, proxy and both replicas are up; /readyz answered 200 once replica A had synced"
pass "both stream captures are up"
readyz=$(curl -sS "http://$ADMIN_ADDR/readyz" || true)
dim "/readyz now: $readyz"
dim "(redis-cli --replica asks for a sync without keys, rdb-filter-only, so for its session the proxy"
dim " knows only the keys written from now on, and says so; replica A's session knows every key)"

# ----------------------------------------------------------------------------------------------
# The workload. Every key it writes has a TTL on the master (10-25 s), so a key that a replica
# keeps with no expiry is wrong by construction.
section "Workload"
m() { rcli "$MASTER" "$@"; }
say "seed scenario:  SETEX key1 10 100   … one second later …   INCR key1"
m SETEX key1 10 100 >/dev/null
seed_set_ms=$(date +%s%3N)
sleep 1
m INCR key1 >/dev/null
say "volatile hash:  HSET user:42 visits 1, EXPIRE user:42 20, then HINCRBY and HSET on it"
m HSET user:42 visits 1 >/dev/null
m EXPIRE user:42 20 >/dev/null
m HINCRBY user:42 visits 1 >/dev/null
m HSET user:42 last-page /cart >/dev/null
say "volatile string: SET session:7 abc EX 15, then APPEND session:7 -def"
m SET session:7 abc EX 15 >/dev/null
m APPEND session:7 -def >/dev/null
say "lock:           SET lock:job worker-1 NX EX 12 (taken), SET lock:job worker-2 NX EX 12 (refused)"
m SET lock:job worker-1 NX EX 12 >/dev/null
m SET lock:job worker-2 NX EX 12 >/dev/null
workload="$WORK/workload.txt"
{
  for i in 1 2 3 4; do
    echo "SET rate:$i 0 EX $((12 + i))"
    echo "RPUSH events:$i boot"
    echo "PEXPIRE events:$i $((14000 + i * 1000))"
    echo "SADD tags:$i new"
    echo "EXPIRE tags:$i $((16 + i))"
    echo "ZADD board:$i 1 alice"
    echo "EXPIRE board:$i $((18 + i))"
  done
  for round in 1 2 3 4 5 6; do
    for i in 1 2 3 4; do
      echo "INCRBY rate:$i $round"
      echo "LPUSH events:$i e$round"
      echo "SADD tags:$i t$((round % 3))"
      echo "ZINCRBY board:$i $round p$((round % 2))"
      echo "INCRBYFLOAT rate:$i 0.5"
    done
  done
  echo "SETRANGE session:7 0 ABC"
} >"$workload"
say "mixed workload: $(wc -l <"$workload") commands on 16 volatile counters, lists, sets and sorted sets"
redis-cli -h 127.0.0.1 -p "$MASTER" <"$workload" >/dev/null
# A last volatile key marks the end of the recorded part of both streams.
say "end marker:     SET demo:recorded 1 EX 60 (the model replays both streams up to it)"
m SET demo:recorded 1 EX 60 >/dev/null

acked=$(m WAIT 2 2000)
check "WAIT 2 2000 on the master: $acked replica links acknowledged every write (A, B and the captures)" \
  [ "$acked" -ge 2 ]

replica_offset() { # the master's view of the replica listening on port $1
  m INFO replication | tr -d '\r' | grep "port=$1," | sed -n 's/.*offset=\([0-9]*\).*/\1/p'
}
master_offset() { m INFO replication | tr -d '\r' | sed -n 's/^master_repl_offset://p'; }
caught_up() { [ "$(replica_offset "$1")" = "$(master_offset)" ]; }
wait_until 10 "replica A to acknowledge the master's offset" caught_up "$VIA_PROXY"
wait_until 10 "replica B to acknowledge the master's offset" caught_up "$DIRECT"
wait_until 10 "the proxied stream capture" has_line proxied '"demo:recorded"'
wait_until 10 "the direct stream capture" has_line direct '"demo:recorded"'
recorded_ms=$(($(date +%s%3N) - seed_set_ms))
pass "both replicas acknowledged master offset $(master_offset); both captures reached the end marker"

# The recordings the model replays: the command lines up to the end marker. REPLCONF lines are
# replication control, not data.
for name in direct proxied; do
  awk '{ print } /"demo:recorded"/ { exit }' "$WORK/$name.stream" |
    grep -E '^[0-9]+ "' | grep -v '^[0-9]* "REPLCONF"' >"$WORK/$name.recording" || true
done
say "recorded $(wc -l <"$WORK/direct.recording") entries directly and $(wc -l <"$WORK/proxied.recording") through the proxy, within $((recorded_ms / 1000)).$(((recorded_ms % 1000) / 100)) s of the SETEX"
if [ "$recorded_ms" -ge 9000 ]; then
  # key1 lives 10 s: past that the master's own DEL for it would be part of the recording.
  fail "the workload took $((recorded_ms / 1000)) s; key1 (10 s TTL) may have expired on the master before the recording ended (machine overloaded?)"
fi

# ----------------------------------------------------------------------------------------------
section "(a) The stream before and after the proxy, for the seed keys"
ms_to_time() { # ms since the epoch → HH:MM:SS.mmm UTC
  printf '%s.%03d' "$(date -u -d "@$(($1 / 1000))" +%H:%M:%S)" $(($1 % 1000))
}
seed_lines() { # the commands of recording $1 from the first to the last line naming key1, with
  # the MULTI/EXEC around them
  awk '
    { line[NR] = $0 }
    /"key1"/ { if (!first) first = NR; last = NR }
    END {
      if (!first) exit
      if (line[first - 1] ~ /^[0-9]+ "MULTI"$/) first--
      if (line[last + 1] ~ /^[0-9]+ "EXEC"$/) last++
      for (i = first; i <= last; i++) {
        split(line[i], parts, " ")
        rest = substr(line[i], length(parts[1]) + 2)
        print rest
      }
    }' "$WORK/$1.recording"
}
seed_lines direct >"$WORK/seed.direct"
seed_lines proxied >"$WORK/seed.proxied"
printf '\n  %s%-52s %s%s\n' "$BOLD" "BEFORE: master -> replica" "AFTER: master -> proxy -> replica" "$OFF"
printf '  %-52s %s\n' "$(printf -- '-%.0s' $(seq 1 50))" "$(printf -- '-%.0s' $(seq 1 50))"
paste -d $'\x1f' "$WORK/seed.direct" "$WORK/seed.proxied" | while IFS=$'\x1f' read -r left right; do
  printf '  %-52s %s\n' "$left" "$right"
done
key1_deadline=$(m PEXPIRETIME key1)
cat <<EOF

  The master ran SETEX key1 10 100 and INCR key1; Redis 7 already writes the SETEX as SET … PXAT
  (absolute), but the INCR goes out bare. The proxy sends the INCR with key1's deadline,
  PEXPIREAT $key1_deadline ($(ms_to_time "$key1_deadline") UTC), in one MULTI/EXEC: a replica that
  applies it late recreates key1 and drops it again at the master's deadline.
EOF
check "the direct stream carries a bare INCR key1" grep -q '"INCR","key1"$' "$WORK/seed.direct"
check "the proxied stream carries INCR key1 + PEXPIREAT key1 $key1_deadline inside MULTI/EXEC" \
  grep -q "\"PEXPIREAT\",\"key1\",\"$key1_deadline\"" "$WORK/seed.proxied"

# ----------------------------------------------------------------------------------------------
section "(b) Master vs both replicas: values and absolute expiries"
value_of() { # value_of PORT KEY → "type value", one line, members sorted
  local port=$1 key=$2 type
  type=$(rcli "$port" TYPE "$key")
  case $type in
    string) printf 'string %s' "$(rcli "$port" GET "$key")" ;;
    hash) printf 'hash {%s}' "$(rcli "$port" HGETALL "$key" | paste - - | sort | tr '\t' '=' | paste -sd, -)" ;;
    list) printf 'list [%s]' "$(rcli "$port" LRANGE "$key" 0 -1 | paste -sd, -)" ;;
    set) printf 'set {%s}' "$(rcli "$port" SMEMBERS "$key" | sort | paste -sd, -)" ;;
    zset) printf 'zset {%s}' "$(rcli "$port" ZRANGE "$key" 0 -1 WITHSCORES | paste - - | tr '\t' '=' | paste -sd, -)" ;;
    none) printf '(absent)' ;;
    *) printf '%s (not compared)' "$type" ;;
  esac
}
short() { # short TEXT WIDTH
  local text=$1 width=$2
  if [ "${#text}" -gt "$width" ]; then printf '%s…' "${text:0:$((width - 1))}"; else printf '%s' "$text"; fi
}
verdict() { # verdict MASTER_VALUE MASTER_EXPIRY VALUE EXPIRY
  if [ "$1" = "$3" ] && [ "$2" = "$4" ]; then
    printf 'same'
  elif [ "$1" != "$3" ]; then
    printf 'VALUE DIFFERS'
  else
    printf 'EXPIRY %s' "$4"
  fi
}
mismatches=0
rows=0
printf '\n  %s%-15s %-38s %-14s %-14s %-14s%s\n' "$BOLD" KEY "MASTER: TYPE AND VALUE" "EXPIRES (UTC)" "A: VIA PROXY" "B: DIRECT" "$OFF"
while read -r key; do
  [ -n "$key" ] || continue
  mv_=$(value_of "$MASTER" "$key")
  me=$(rcli "$MASTER" PEXPIRETIME "$key")
  av=$(value_of "$VIA_PROXY" "$key")
  ae=$(rcli "$VIA_PROXY" PEXPIRETIME "$key")
  bv=$(value_of "$DIRECT" "$key")
  be=$(rcli "$DIRECT" PEXPIRETIME "$key")
  a=$(verdict "$mv_" "$me" "$av" "$ae")
  b=$(verdict "$mv_" "$me" "$bv" "$be")
  [ "$a" = same ] && [ "$b" = same ] || mismatches=$((mismatches + 1))
  rows=$((rows + 1))
  if [ "$me" -gt 0 ] 2>/dev/null; then expiry=$(ms_to_time "$me"); else expiry="none ($me)"; fi
  printf '  %-15s %-38s %-14s %-14s %-14s\n' "$(short "$key" 15)" "$(short "$mv_" 38)" "$expiry" "$a" "$b"
  if [ "$a" != same ]; then dim "    A: $av, PEXPIRETIME $ae"; fi
  if [ "$b" != same ]; then dim "    B: $bv, PEXPIRETIME $be"; fi
done < <(m --scan | sort)
echo
agree=false
[ "$mismatches" -eq 0 ] && [ "$rows" -gt 0 ] && agree=true
check "$rows keys: replica A (through the proxy) and replica B (direct) hold the master's values and the same absolute expiries, to the ms" $agree
sizes=("$(m DBSIZE)" "$(rcli "$VIA_PROXY" DBSIZE)" "$(rcli "$DIRECT" DBSIZE)")
same_size=false
[ "${sizes[0]}" = "${sizes[1]}" ] && [ "${sizes[0]}" = "${sizes[2]}" ] && same_size=true
check "DBSIZE master / A / B: ${sizes[0]} / ${sizes[1]} / ${sizes[2]}" $same_size
a_own=$(rcli "$VIA_PROXY" INFO replication | tr -d '\r' | sed -n 's/^master_repl_offset://p')
say "offsets: master $(master_offset); B (direct) acked $(replica_offset "$DIRECT");"
say "         A is at $a_own in the proxy's own offset space (rewrites add bytes), which the proxy"
say "         translates for the master: the master sees A acknowledge $(replica_offset "$VIA_PROXY")."

# ----------------------------------------------------------------------------------------------
section "(c) Replica lag, from the proxy's /metrics"
metrics=$(curl -fsS "http://$ADMIN_ADDR/metrics")
metric_value() { # metric_value NAME REPLICA_LABEL
  printf '%s\n' "$metrics" | grep -F "$1{" | grep -F "replica=\"$2\"" | awk '{ print $NF }' | head -1
}
printf '\n  %s%-28s %-22s %12s %12s%s\n' "$BOLD" REPLICA "WHAT" "LAG BYTES" "LAG SECONDS" "$OFF"
# Sessions whose replica link is up now (a session's label changes once the replica names its
# port, and the old label's gauges stay at 0).
for label in $(printf '%s\n' "$metrics" | grep '^pika_ttl_proxy_link_up{' | grep 'side="downstream"' |
  awk '$NF == 1' | sed -n 's/.*replica="\([^"]*\)".*/\1/p' | sort -u); do
  what="capture (ACKs 0)"
  [ "$label" = "127.0.0.1:$VIA_PROXY" ] && what="replica A"
  printf '  %-28s %-22s %12s %12s\n' "$label" "$what" \
    "$(metric_value pika_ttl_proxy_replica_lag_bytes "$label")" \
    "$(metric_value pika_ttl_proxy_replica_lag_seconds "$label")"
done
b_lag=$(m INFO replication | tr -d '\r' | grep "port=$DIRECT," | sed -n 's/.*lag=\([0-9]*\).*/\1/p')
printf '  %-28s %-22s %12s %12s\n' "127.0.0.1:$DIRECT" "replica B (master INFO)" "$(($(master_offset) - $(replica_offset "$DIRECT")))" "${b_lag:-?}"
dim "(capture: redis-cli --replica acknowledges offset 0, so its lag is all it received;"
dim " B: bytes = master offset - B's acknowledged offset, seconds = INFO's lag, time since its last ACK)"
sum_metric() { printf '%s\n' "$metrics" | grep "^$1" | awk '{ s += $NF } END { print s + 0 }'; }
say ""
say "entries rewritten: $(sum_metric 'pika_ttl_proxy_entries_total{.*outcome="rewritten"')," \
  "passed: $(sum_metric 'pika_ttl_proxy_entries_total{.*outcome="passed"')," \
  "at risk: $(sum_metric 'pika_ttl_proxy_at_risk_total')," \
  "full syncs: $(sum_metric 'pika_ttl_proxy_full_syncs_total')"
check "/metrics reports replica A's lag (pika_ttl_proxy_replica_lag_bytes{replica=\"127.0.0.1:$VIA_PROXY\"})" \
  [ -n "$(metric_value pika_ttl_proxy_replica_lag_bytes "127.0.0.1:$VIA_PROXY")" ]

# ----------------------------------------------------------------------------------------------
section "(d) Switching a family off and on at run time (pika-ttl-proxy families)"
# Shows what the proxy sent for one INCR: the proxied stream from the INCR up to a marker
# write issued right after it (so nothing the proxy sends for the INCR can come later).
MARK=0
incr_and_show() {
  MARK=$((MARK + 1))
  local from
  from=$(wc -l <"$WORK/proxied.stream")
  m INCR visits:today >/dev/null
  m SET "demo:mark:$MARK" 1 EX 60 >/dev/null
  wait_until 10 "the proxied stream to show the INCR" has_line proxied "\"demo:mark:$MARK\""
  tail -n +"$((from + 1))" "$WORK/proxied.stream" | grep -E '^[0-9]+ "' |
    grep -v -e '"demo:mark:' -e '"REPLCONF"' -e '^[0-9]* "ping"' | cut -d' ' -f2- >"$WORK/step.$MARK"
  sed 's/^/      /' "$WORK/step.$MARK"
}
m SETEX visits:today 300 10 >/dev/null
say "SETEX visits:today 300 10 on the master"
say "\$ pika-ttl-proxy families disable string-counter --admin $ADMIN_ADDR"
"$BIN" families disable string-counter --admin "$ADMIN_ADDR" | sed 's/^/      /'
say "INCR visits:today → the proxy sends:"
incr_and_show
bare=false
grep -q '"INCR","visits:today"' "$WORK/step.$MARK" && ! grep -q PEXPIREAT "$WORK/step.$MARK" && bare=true
check "with string-counter off the INCR goes out as the master sent it, no PEXPIREAT" $bare
say "\$ pika-ttl-proxy families enable string-counter --admin $ADMIN_ADDR"
"$BIN" families enable string-counter --admin "$ADMIN_ADDR" | sed 's/^/      /'
say "INCR visits:today → the proxy sends:"
incr_and_show
deadline=$(m PEXPIRETIME visits:today)
check "with string-counter on again the INCR carries PEXPIREAT visits:today $deadline" \
  grep -q "\"PEXPIREAT\",\"visits:today\",\"$deadline\"" "$WORK/step.$MARK"
say "\$ pika-ttl-proxy families list --admin $ADMIN_ADDR"
"$BIN" families list --admin "$ADMIN_ADDR" | sed 's/^/      /'

# ----------------------------------------------------------------------------------------------
section "(e) The Pika bug and its fix, on the reference model"
cat <<EOF

  Why replicas A and B cannot show the bug: a real ${BOLD}Redis replica never expires a key by its
  own clock${OFF}. It hides a key whose deadline has passed from reads, but deletes it only when the
  master's DEL arrives, so a late bare INCR still finds key1 and both replicas above are right.
  A ${BOLD}Pika replica expires keys by its own clock${OFF}: Pika never replicates expiry, each node
  drops keys when its own clock passes their deadline. Applying the same stream $((MODEL_DELAY_MS / 1000)) s late, it finds key1 expired,
  and INCR creates key1=1 with no TTL: the master dropped key1 long ago, the replica keeps it forever.

  No Pika server runs here (give one with PIKA_BIN=/path/to/pika to see this on real Pika
  servers), so the next part uses the project's ${BOLD}REFERENCE MODEL${OFF} of such a
  replica (src/model, the model the test suite proves the rewrite rules against). It replays the
  two recordings above, applying every entry $((MODEL_DELAY_MS / 1000)) s after the master sent it:
    \$ pika-ttl-proxy model-replay --delay-ms $MODEL_DELAY_MS direct.recording     (rewriting off)
    \$ pika-ttl-proxy model-replay --delay-ms $MODEL_DELAY_MS proxied.recording    (rewriting on)
EOF
forever_count() { # the model's count of keys that never expire
  sed -n -e 's/.*alive forever)*: *\([0-9][0-9]*\).*/\1/p' -e 's/^immortal keys: *\([0-9][0-9]*\).*/\1/p' "$1" | head -1
}
later_state() { # the model's state far in the future
  awk '/^-- state ten years later/ { on = 1; next } /^-- / { on = 0 } on && !/alive forever|^immortal keys/' "$1"
}
key1_in() { # key1's line in a section of the model's output
  awk -v section="$2" 'index($0, section) == 4 { on = 1; next } /^-- / { on = 0 } on && /^db0 key1 /' "$1"
}
key1_shown() { # key1 in a section, or that it is gone
  local line
  line=$(key1_in "$1" "$2" | cut -d' ' -f2-)
  printf '%s' "${line:-(gone: expired at $(ms_to_time "$key1_deadline") UTC)}"
}
for name in direct proxied; do
  "$BIN" model-replay --delay-ms "$MODEL_DELAY_MS" "$WORK/$name.recording" >"$WORK/$name.model" 2>&1 ||
    fail "model-replay of the $name recording failed: $(tail -1 "$WORK/$name.model")"
done
direct_forever=$(forever_count "$WORK/direct.model")
proxied_forever=$(forever_count "$WORK/proxied.model")
printf '\n  %s%-34s %-42s %s%s\n' "$BOLD" "MODEL REPLICA, $((MODEL_DELAY_MS / 1000)) s LATE" "WITHOUT THE PROXY (direct stream)" "WITH THE PROXY" "$OFF"
printf '  %-34s %-42s %s\n' "key1 right after the last apply" \
  "$(key1_shown "$WORK/direct.model" "state right after")" \
  "$(key1_shown "$WORK/proxied.model" "state right after")"
printf '  %-34s %-42s %s\n' "key1 ten years later" \
  "$(key1_shown "$WORK/direct.model" "state ten years later")" \
  "$(key1_shown "$WORK/proxied.model" "state ten years later")"
printf '  %-34s %-42s %s\n' "keys that never expire" "${direct_forever:-?}" "${proxied_forever:-?}"
echo
say "${BOLD}Model, without the proxy:${OFF} $(head -1 "$WORK/direct.model")"
say "keys it still holds ten years later (every one of them has a TTL on the master):"
later_state "$WORK/direct.model" | sed 's/^/      /'
say "${BOLD}Model, with the proxy:${OFF} $(head -1 "$WORK/proxied.model")"
say "keys it still holds ten years later:"
later_state "$WORK/proxied.model" | sed 's/^/      /'
echo
bug_shown=false
[ "${direct_forever:-0}" -ge 1 ] && [ -n "$(key1_in "$WORK/direct.model" "state ten years later")" ] && bug_shown=true
check "model without rewriting: ${direct_forever:-?} immortal keys (at least 1 expected: the bug), key1 among them" $bug_shown
fixed=false
[ "${proxied_forever:-1}" -eq 0 ] && [ -z "$(key1_in "$WORK/proxied.model" "state ten years later")" ] && fixed=true
check "model with rewriting: ${proxied_forever:-?} immortal keys (0 expected), key1 gone after its deadline" $fixed

# ----------------------------------------------------------------------------------------------
section "Summary"
say "demo ran in $((SECONDS - demo_started)) s after the build"
if [ "$FAILED" -eq 0 ]; then
  printf '  %s%d checks passed, 0 failed%s\n' "$GREEN$BOLD" "$PASSED" "$OFF"
  exit 0
fi
printf '  %s%d checks passed, %d failed:%s\n' "$RED$BOLD" "$PASSED" "$FAILED" "$OFF"
for c in "${FAILED_CHECKS[@]}"; do say "  - $c"; done
exit 1
