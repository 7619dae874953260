#!/usr/bin/env bash
# The fleet benchmark (issue #14): what the fleet store costs, and a fleet behind a balancer.
#
#   1. One gateway, `store = "local"` against `store = "redis://…"`, alternated ROUNDS times: whole
#      sessions (TCP, TLS, upgrade, 16-byte echo, close) per gateway CPU-second. With Redis each
#      session takes a fleet-wide place (leased to the node in blocks: a round trip per block) and
#      is listed and released (batched every 20 ms), on the gateway's tokio thread.
#   2. NODES gateways sharing one Redis behind HAProxy (TCP, PROXY v2, round robin, health checks
#      on /readyz): sessions per second through the balancer, per-node CPU, and memory per idle
#      session held through the balancer.
#
# Uses the release binaries (cargo build --release -p portcullis -p portcullis-loadgen), Debian's
# redis-server and haproxy, and openssl. Every process it starts is stopped on exit.
#
# Settings (environment): ROUNDS=3 NODES=3 CONNECT_DURATION=8s CONNECT_LOOPS=16 IDLE_SESSIONS=3000
#   IDLE_HOLD=6s GATEWAY_BIN=PATH OUT=DIR
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/target/release
GATEWAY=${GATEWAY_BIN:-$BIN/portcullis}
L=$BIN/portcullis-loadgen
ROUNDS=${ROUNDS:-3} NODES=${NODES:-3}
CONNECT_DURATION=${CONNECT_DURATION:-8s} CONNECT_LOOPS=${CONNECT_LOOPS:-16}
IDLE_SESSIONS=${IDLE_SESSIONS:-3000} IDLE_HOLD=${IDLE_HOLD:-6s}
OUT=${OUT:-$ROOT/target/fleet-bench/$(date -u +%Y%m%d-%H%M%S)}
for tool in "$GATEWAY" "$L" /usr/bin/redis-server /usr/sbin/haproxy; do
    [[ -x $tool ]] || { echo "fleet.sh: $tool missing" >&2; exit 1; }
done
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/portcullis-fleet.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "[fleet] $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout key.pem -out cert.pem \
    -days 2 -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
"$GATEWAY" keygen --out token >/dev/null
"$L" target --listen 127.0.0.1:0 --mode echo >target.log 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do TARGET=$(sed -n 's/^portcullis-loadgen target: echo on //p' target.log); [[ -n $TARGET ]] && break; sleep 0.1; done
REDIS_PORT=$(free_port)
/usr/bin/redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --dir "$WORK" >redis.log 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT"

# gateway NAME PORT STORE EXTRA: starts one, prints its pid.
gateway() {
    local name=$1 port=$2 store=$3 extra=${4:-}
    cat >"$name.toml" <<EOF
listen = "127.0.0.1:$port"
workers = 2
[tls]
cert = "cert.pem"
key = "key.pem"
[auth]
token_public_key = "token.pub"
[audit]
path = "$name.audit.jsonl"
[limits]
new_connections_per_second = 1000000
max_connections_per_client = 10000000
[session]
max_sessions_per_user = 1000000
[admin]
listen = "off"
[cluster]
node = "$name"
store = "$store"
$extra
[[target]]
name = "t"
address = "$TARGET"
protocol = "tcp"
[[user]]
name = "bench"
targets = ["t"]
EOF
    "$GATEWAY" serve --config "$name.toml" >"$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$port" || { log "$name did not start"; cat "$name.log" >&2; exit 1; }
    echo "$pid"
}

CONN=(--insecure --token-key "$WORK/token.key" --user bench --target t -q)

# connect URL PIDS...: prints "sessions cpu_seconds"
connect() {
    local url=$1; shift
    local before=0 after=0 p
    for p in "$@"; do before=$((before + $(cpu_ticks "$p"))); done
    "$L" connect "$url" "${CONN[@]}" --workers 2 -n "$CONNECT_LOOPS" -d "$CONNECT_DURATION" --json c.json >/dev/null 2>&1
    for p in "$@"; do after=$((after + $(cpu_ticks "$p"))); done
    python3 -c "import json; d=json.load(open('c.json')); print(d['completed'], ($after-$before)/100, d['sessions_per_s'])"
}

log "1. one gateway: local store vs Redis, $ROUNDS rounds"
echo "round,store,sessions,cpu_s,sessions_per_cpu_s,sessions_per_s" >"$OUT/store.csv"
for round in $(seq "$ROUNDS"); do
    for store in local redis; do
        port=$(free_port)
        url="local"; [[ $store == redis ]] && url="redis://127.0.0.1:$REDIS_PORT/1"
        pid=$(gateway "one-$store" "$port" "$url")
        PIDS+=("$pid")
        sleep 0.5
        read -r n cpu rate < <(connect "wss://127.0.0.1:$port" "$pid")
        kill "$pid"; wait "$pid" 2>/dev/null || true
        per=$(python3 -c "print(round($n/$cpu) if $cpu > 0 else 0)")
        echo "$round,$store,$n,$cpu,$per,$rate" >>"$OUT/store.csv"
        log "round $round $store: $n sessions, $cpu CPU-s, $per per CPU-s"
    done
done

log "2. $NODES gateways on Redis behind HAProxy"
servers=""
NODE_PIDS=()
for i in $(seq "$NODES"); do
    port=$(free_port)
    pid=$(gateway "node$i" "$port" "redis://127.0.0.1:$REDIS_PORT/2" $'[proxy_protocol]\ntrusted = ["127.0.0.1/32"]')
    NODE_PIDS+=("$pid")
    PIDS+=("$pid")
    servers+="  server node$i 127.0.0.1:$port send-proxy-v2"$'\n'
done
LB_PORT=$(free_port)
cat >haproxy.cfg <<EOF
global
  log stderr format raw local0 warning
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend fe
  bind 127.0.0.1:$LB_PORT
  default_backend be
backend be
  balance roundrobin
$servers
EOF
/usr/sbin/haproxy -f haproxy.cfg -db >haproxy.log 2>&1 &
PIDS+=($!)
wait_port "$LB_PORT" || { log "haproxy did not start"; cat haproxy.log >&2; exit 1; }
read -r n cpu rate < <(connect "wss://127.0.0.1:$LB_PORT" "${NODE_PIDS[@]}")
log "through the balancer: $n sessions in $CONNECT_DURATION ($rate/s), gateways' CPU $cpu s"
before=()
for p in "${NODE_PIDS[@]}"; do before+=("$(rss_kib "$p")"); done
"$L" idle "wss://127.0.0.1:$LB_PORT" "${CONN[@]}" --workers 2 -n "$IDLE_SESSIONS" --concurrency 256 --hold "$IDLE_HOLD" \
    --json idle.json >/dev/null 2>&1 &
IDLE=$!
# Sample while the sessions are held: once every session is open, before the hold ends.
hold=${IDLE_HOLD%s}
sleep $((hold / 2 + IDLE_SESSIONS / 2000 + 1))
growth=0
for i in "${!NODE_PIDS[@]}"; do
    now=$(rss_kib "${NODE_PIDS[$i]}")
    growth=$((growth + now - before[i]))
done
wait "$IDLE" || true
held=$(python3 -c "import json; d=json.load(open('idle.json')); print(d.get('held', d.get('sessions', 0)))")
python3 - "$OUT" "$n" "$cpu" "$rate" "$NODES" "$growth" "$held" <<'EOF'
import csv, json, statistics, sys
out, n, cpu, rate, nodes, growth, held = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
rows = list(csv.DictReader(open(f"{out}/store.csv")))
per = {s: [int(r["sessions_per_cpu_s"]) for r in rows if r["store"] == s] for s in ("local", "redis")}
local, redis = statistics.mean(per["local"]), statistics.mean(per["redis"])
summary = {
    "one_gateway": {"local_sessions_per_cpu_s": per["local"], "redis_sessions_per_cpu_s": per["redis"],
                    "redis_cost_percent": round(100 * (1 - redis / local), 1)},
    "fleet": {"nodes": nodes, "sessions": n, "sessions_per_s": rate, "gateways_cpu_s": cpu,
              "sessions_per_gateway_cpu_s": round(n / cpu) if cpu else None,
              "idle_sessions_held": held, "idle_kib_per_session": round(growth / held, 1) if held else None},
}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
print(json.dumps(summary, indent=1))
EOF
log "results in $OUT"
