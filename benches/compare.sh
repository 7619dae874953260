#!/usr/bin/env bash
# Side-by-side performance harness: the same load scenarios against the direct path, Portcullis
# (its tunnel route and its RD Gateway), websockify, websocat, Devolutions Gateway and wstunnel, on
# this machine, in one bounded run. See benches/README.md.
#
# Builds release binaries, starts every server on 127.0.0.1 with fresh ports, runs
# portcullis-loadgen's throughput, latency, connect and idle scenarios against each path, measures
# the raw ceilings (iperf3 over loopback, rustls handshakes alone, AES-128-GCM alone: the crypto
# floor), then prints a markdown table and
# writes summary.json and chart.svg (compare-report). Every process it starts is stopped on exit.
#
# Settings (environment):
#   OUT=DIR                  results directory (default target/compare/<date>-<time>)
#   PATHS="direct portcullis rd-gateway websockify websockify-tls websocat websocat-tls devolutions wstunnel"
#                            paths to measure; rd-gateway: the same gateway and target through
#                            /remoteDesktopGateway/ (MS-TSGU over WebSocket, an `rdp` target,
#                            the token as PAA cookie): every frame one DATA packet;
#                            devolutions: Devolutions Gateway's TCP forwarding (/jet/fwd/tcp/<id>,
#                            wss, a fresh RS256 association token per session, minted by the load
#                            generator); wstunnel: `wstunnel server wss://…` (its client's upgrade:
#                            /v1/events, the destination as a JWT in Sec-WebSocket-Protocol)
#   DGATEWAY_BIN=PATH        devolutions-gateway binary (default: /work/peers/devolutions-gateway/
#                            target/release/devolutions-gateway, else on PATH); path skipped without
#   WSTUNNEL_BIN=PATH        wstunnel binary (default: /work/peers/wstunnel/target/release/wstunnel,
#                            else on PATH); path skipped without
#   CRYPTO_DURATION=3s       the crypto floor: AES-128-GCM seal + open of 16 KiB records (ring, one
#                            thread pinned to CPU 0), with the throughput scenario
#   SCENARIOS="throughput latency connect idle ssh fleet"
#                            fleet: benches/fleet.sh (Redis and HAProxy from Debian): one gateway
#                            with the local store against Redis, then FLEET_NODES gateways on one
#                            Redis behind HAProxy; its results land in $OUT/fleet
#   FLEET_ROUNDS=3 FLEET_NODES=3   (the fleet's connect runs use CONNECT_DURATION and CONNECT_LOOPS)
#   QUICK=1                  small and short runs (a smoke test of the harness, not a measurement)
#   THROUGHPUT_DURATION=5s   1 session, echo target
#   LATENCY_SESSIONS=1000 LATENCY_RATE=10000 LATENCY_DURATION=10s LATENCY_SIZE=64
#   CONNECT_DURATION=5s CONNECT_LOOPS=16
#   IDLE_SESSIONS=20000 IDLE_HOLD=5s  (capped by the open-files limit, see below)
#   SSH_DURATION=10s SSH_CONCURRENCY=4   whole SSH sessions (russh client: key exchange, public key
#                                     authentication, `true`) to an sshd the script starts
#   WEBSOCKIFY_MAX_SESSIONS=450       websockify forks a ~3 MiB process per connection and its
#                                     select() fails past ~500 concurrent connections (fd > 1024)
#   WORKERS=$(nproc)         Portcullis workers
#   LOADGEN_WORKERS=1        load generator threads for throughput and latency
#   LOADGEN_CONNECT_WORKERS=$(nproc)  for connect and idle (TLS clients are CPU-bound too)
#   RUSTLS_DURATION=3        seconds per kind of rustls-only handshake
#   TOTAL_TIMEOUT=2400       seconds: the whole run is stopped after this
#   NO_BUILD=1               use the existing target/release binaries
#   DEFAULT_LIMITS=1         keep the gateway's default connection limits (50 new connections a
#                            second per client): by default they are lifted, since the load
#                            comes from one or a few loopback addresses
#   TLS_RESUME=1             connect: clients keep TLS sessions and resume them (tickets) instead
#                            of a full handshake per session
#   BUFFER_SIZE=BYTES        the gateway's [session] buffer_size (default: its own, 256 KiB)
#   PIN=1                    each server under test alone on the last CPU (Portcullis with one
#                            worker; every peer's threads there too), this script, the load
#                            generator, the echo target and the direct path on the others: what
#                            one gateway core does when the client and target do not share it
#   GATEWAY_BIN=PATH         measure this portcullis binary (e.g. another commit's build) with this
#                            tree's load generator: before/after comparisons with the same client
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

NPROC=$(nproc)
# PIN=1: the servers on the last CPU, the rest (this script and all it starts) on the others.
SERVER_PIN=() PINNED=""
if [[ ${PIN:-0} == 1 ]]; then
    command -v taskset >/dev/null || { echo "PIN=1 needs taskset (util-linux)" >&2; exit 1; }
    # The CPUs this script may use (it may run under a mask already): the last for the servers.
    read -r SERVER_CPU REST_CPUS < <(python3 -c 'import os; c = sorted(os.sched_getaffinity(0)); print(c[-1], ",".join(map(str, c[:-1])))')
    [[ -n ${REST_CPUS:-} ]] || { echo "PIN=1 needs two CPUs" >&2; exit 1; }
    taskset -pc "$REST_CPUS" $$ >/dev/null
    SERVER_PIN=(taskset -c "$SERVER_CPU")
    PINNED="servers on CPU $SERVER_CPU, load generator and targets on CPUs $REST_CPUS"
    WORKERS=${WORKERS:-1}
    LOADGEN_CONNECT_WORKERS=${LOADGEN_CONNECT_WORKERS:-$(nproc)} # the CPUs left to it
fi
PATHS=${PATHS:-"direct portcullis rd-gateway websockify websockify-tls websocat websocat-tls devolutions wstunnel"}
SCENARIOS=${SCENARIOS:-"throughput latency connect idle ssh fleet"}
if [[ ${QUICK:-0} == 1 ]]; then
    THROUGHPUT_DURATION=${THROUGHPUT_DURATION:-2s}
    LATENCY_SESSIONS=${LATENCY_SESSIONS:-50} LATENCY_RATE=${LATENCY_RATE:-500} LATENCY_DURATION=${LATENCY_DURATION:-2s}
    CONNECT_DURATION=${CONNECT_DURATION:-2s}
    IDLE_SESSIONS=${IDLE_SESSIONS:-500} IDLE_HOLD=${IDLE_HOLD:-1s}
    WEBSOCKIFY_MAX_SESSIONS=${WEBSOCKIFY_MAX_SESSIONS:-50}
    RUSTLS_DURATION=${RUSTLS_DURATION:-1}
    SSH_DURATION=${SSH_DURATION:-2s}
    CRYPTO_DURATION=${CRYPTO_DURATION:-1s}
fi
THROUGHPUT_DURATION=${THROUGHPUT_DURATION:-5s}
LATENCY_SESSIONS=${LATENCY_SESSIONS:-1000}
LATENCY_RATE=${LATENCY_RATE:-10000}
LATENCY_DURATION=${LATENCY_DURATION:-10s}
LATENCY_SIZE=${LATENCY_SIZE:-64}
CONNECT_DURATION=${CONNECT_DURATION:-5s}
CONNECT_LOOPS=${CONNECT_LOOPS:-16}
IDLE_SESSIONS=${IDLE_SESSIONS:-20000}
IDLE_HOLD=${IDLE_HOLD:-5s}
WEBSOCKIFY_MAX_SESSIONS=${WEBSOCKIFY_MAX_SESSIONS:-450}
WORKERS=${WORKERS:-$NPROC}
LOADGEN_WORKERS=${LOADGEN_WORKERS:-1}
LOADGEN_CONNECT_WORKERS=${LOADGEN_CONNECT_WORKERS:-$NPROC}
RUSTLS_DURATION=${RUSTLS_DURATION:-3}
SSH_DURATION=${SSH_DURATION:-10s}
SSH_CONCURRENCY=${SSH_CONCURRENCY:-4}
TOTAL_TIMEOUT=${TOTAL_TIMEOUT:-2400}
CRYPTO_DURATION=${CRYPTO_DURATION:-3s}
OUT=${OUT:-$ROOT/target/compare/$(date +%Y%m%d-%H%M%S)}

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# A duration ("10s", "500ms", "2m") in whole seconds, rounded up, for time limits.
secs() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /ms$/) n /= 1000; else if (v ~ /m$/) n *= 60; printf "%d", n + 0.999 }'; }

want_path() { [[ " $PATHS " == *" $1 "* ]]; }
want() { [[ " $SCENARIOS " == *" $1 "* ]]; }

# --- What is needed, what is missing --------------------------------------------------------------
WEBSOCAT=$(command -v websocat || true)
[[ -z $WEBSOCAT && -x $HOME/.cargo/bin/websocat ]] && WEBSOCAT=$HOME/.cargo/bin/websocat
WEBSOCKIFY=$(command -v websockify || true)
IPERF3=$(command -v iperf3 || true)
# Peers built from source (benches/README.md says how): an explicit *_BIN, else the build in
# /work/peers, else PATH.
find_peer() {
    local explicit=$1 built=$2 name=$3
    if [[ -n $explicit ]]; then
        if [[ -x $explicit ]]; then echo "$explicit"; fi
    elif [[ -x $built ]]; then
        echo "$built"
    else
        command -v "$name" || true
    fi
}
DGATEWAY=$(find_peer "${DGATEWAY_BIN:-}" /work/peers/devolutions-gateway/target/release/devolutions-gateway devolutions-gateway)
WSTUNNEL=$(find_peer "${WSTUNNEL_BIN:-}" /work/peers/wstunnel/target/release/wstunnel wstunnel)
OPENSSL=$(command -v openssl || true)
TASKSET=$(command -v taskset || true)
missing=()
[[ -z $IPERF3 ]] && missing+=("iperf3 (apt-get install iperf3): no raw loopback ceiling")
[[ -z $WEBSOCKIFY ]] && missing+=("websockify (apt-get install websockify): websockify paths skipped")
[[ -z $WEBSOCAT ]] && missing+=("websocat (cargo install websocat): websocat paths skipped")
if want_path devolutions && [[ -z $DGATEWAY ]]; then
    missing+=("devolutions-gateway (DGATEWAY_BIN=${DGATEWAY_BIN:-unset}; how to build it: benches/README.md): devolutions path skipped")
fi
if want_path wstunnel && [[ -z $WSTUNNEL ]]; then
    missing+=("wstunnel (WSTUNNEL_BIN=${WSTUNNEL_BIN:-unset}; how to build it: benches/README.md): wstunnel path skipped")
fi
SSHD=/usr/sbin/sshd SSH_KEYGEN=$(command -v ssh-keygen || true)
if want ssh && [[ ! -x $SSHD || -z $SSH_KEYGEN ]]; then
    missing+=("sshd and ssh-keygen (apt-get install openssh-server openssh-client): ssh scenario skipped")
fi
if want fleet && [[ ! -x /usr/bin/redis-server || ! -x /usr/sbin/haproxy ]]; then
    missing+=("redis-server and haproxy (apt-get install redis-server haproxy): fleet scenario skipped")
fi
[[ -z $OPENSSL ]] && missing+=("openssl (apt-get install openssl): no certificate for the TLS peers, TLS peer paths skipped")
command -v python3 >/dev/null || die "python3 is needed (free port numbers)"
for m in "${missing[@]}"; do log "missing: $m"; done

# --- Processes: every one is recorded, and stopped (with its process group) on exit ---------------
declare -a STARTED=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${STARTED[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${STARTED[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n ${WORK:-} && -d ${WORK:-} ]] && rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# Starts "$@" in its own session (so its children can be stopped with it); sets $PID.
spawn() {
    local logfile=$1
    shift
    setsid "$@" >"$logfile" 2>&1 </dev/null &
    PID=$!
    STARTED+=("$PID")
}

# Stops one process started by spawn (and its process group).
stop() {
    local pid=$1
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something accepts on 127.0.0.1:$1 (or $2 seconds pass).
wait_port() {
    local port=$1 limit=${2:-20} i
    for ((i = 0; i < limit * 10; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# CPU time (user + system, children included) of a process, in seconds.
cpu_s() {
    local ticks hz
    [[ -r /proc/$1/stat ]] || { echo 0; return; }
    hz=$(getconf CLK_TCK)
    ticks=$(sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13 + $14 + $15}')
    awk -v t="$ticks" -v hz="$hz" 'BEGIN {printf "%.3f", t / hz}'
}

# Whole run watchdog.
setsid bash -c "sleep $TOTAL_TIMEOUT; echo '[compare] TOTAL_TIMEOUT ($TOTAL_TIMEOUT s) reached, stopping' >&2; kill -TERM $$" &
STARTED+=("$!")

# --- Limits ------------------------------------------------------------------------------------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
# A relay holds two descriptors per session (client and target); keep some for everything else.
IDLE_CAP=$(((NOFILE - 256) / 2))
IDLE_N=$IDLE_SESSIONS
if ((IDLE_N > IDLE_CAP)); then
    log "idle: $IDLE_SESSIONS sessions need about $((2 * IDLE_SESSIONS)) descriptors in the relay, the open-files limit is $NOFILE (hard limit; raise it as root with CAP_SYS_RESOURCE, e.g. ulimit -Hn or LimitNOFILE): measuring $IDLE_CAP"
    IDLE_N=$IDLE_CAP
fi

# --- Build -------------------------------------------------------------------------------------------
if [[ ${NO_BUILD:-0} != 1 ]]; then
    log "building release binaries"
    timeout 1800 cargo build --release --quiet -p portcullis -p portcullis-loadgen -p portcullis-benches --bins \
        || die "cargo build failed"
fi
BIN=$ROOT/target/release
GATEWAY=${GATEWAY_BIN:-$BIN/portcullis}
if [[ ${DEFAULT_LIMITS:-0} == 1 ]]; then
    LIMITS_SECTION=""
else
    LIMITS_SECTION=$'[limits]\nnew_connections_per_second = 1000000\nmax_connections_per_client = 10000000'
    # One user opens every session of a scenario: lift the per-user cap too, on binaries that
    # have one (older ones refuse the key).
    if grep -qa max_sessions_per_user "$GATEWAY"; then
        LIMITS_SECTION+=$'\n[session]\nmax_sessions_per_user = 1000000'
    fi
fi
if [[ -n ${BUFFER_SIZE:-} ]]; then
    [[ $LIMITS_SECTION == *"[session]"* ]] || LIMITS_SECTION+=$'\n[session]'
    LIMITS_SECTION+=$'\n'"buffer_size = $BUFFER_SIZE"
fi
L=$BIN/portcullis-loadgen
for b in "$GATEWAY" "$L" "$BIN/rustls-handshake" "$BIN/compare-report"; do
    [[ -x $b ]] || die "$b missing (run without NO_BUILD=1)"
done

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/portcullis-compare.XXXXXX)
log "results in $OUT"

# --- The machine, and whether it is quiet ------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
BUSY=$(pgrep -fc 'cargo |rustc |ci/run' || true)
if awk -v l="$LOAD_BEFORE" -v n="$NPROC" 'BEGIN {exit !(l > n / 2)}'; then
    log "warning: load average $LOAD_BEFORE on $NPROC CPUs: the machine is not quiet, numbers will be noisy"
fi
json_str() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
cat >"$OUT/meta.json" <<EOF
{
  "date": $(json_str "$(date -u +%Y-%m-%dT%H:%MZ)"),
  "host": $(json_str "$(hostname)"),
  "nproc": $NPROC,
  "cpu": $(json_str "$CPU_MODEL"),
  "kernel": $(json_str "$(uname -r)"),
  "git": $(json_str "$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo ' with uncommitted changes')"),
  "load_before": $LOAD_BEFORE,
  "pinned": $(json_str "$PINNED"),
  "busy_build_processes": $BUSY,
  "nofile_limit": $NOFILE,
  "settings": {
    "throughput_duration": "$THROUGHPUT_DURATION",
    "latency_sessions": $LATENCY_SESSIONS, "latency_rate": $LATENCY_RATE,
    "latency_duration": "$LATENCY_DURATION", "latency_size": $LATENCY_SIZE,
    "connect_duration": "$CONNECT_DURATION", "connect_loops": $CONNECT_LOOPS,
    "idle_sessions": $IDLE_N, "idle_sessions_asked": $IDLE_SESSIONS, "idle_hold": "$IDLE_HOLD",
    "websockify_max_sessions": $WEBSOCKIFY_MAX_SESSIONS,
    "ssh_duration": "$SSH_DURATION", "ssh_concurrency": $SSH_CONCURRENCY,
    "workers": $WORKERS, "loadgen_workers": $LOADGEN_WORKERS, "loadgen_connect_workers": $LOADGEN_CONNECT_WORKERS,
    "crypto_duration": "$CRYPTO_DURATION"
  },
  "peers": {
    "devolutions_gateway": $(json_str "${DGATEWAY:-}"),
    "wstunnel": $(json_str "${WSTUNNEL:+$("$WSTUNNEL" --version 2>/dev/null | head -1) ($WSTUNNEL)}")
  }
}
EOF

# --- Certificates and keys ---------------------------------------------------------------------------
# One ECDSA P-256 certificate for every TLS server (the key type Portcullis generates itself), so the
# handshakes compared are the same work. websocat wants it as PKCS#12.
CERT=$WORK/cert.pem KEY=$WORK/key.pem P12=$WORK/id.p12
if [[ -n $OPENSSL ]]; then
    timeout 30 "$OPENSSL" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$KEY" -out "$CERT" \
        -days 2 -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
    "$OPENSSL" pkcs12 -export -out "$P12" -inkey "$KEY" -in "$CERT" -passout pass: 2>/dev/null \
        || { log "openssl could not write a PKCS#12 file: websocat without TLS only"; P12=; }
else
    CERT= KEY= P12=
fi
"$GATEWAY" keygen --out "$WORK/token" >/dev/null 2>&1 || die "portcullis keygen failed"
# Devolutions Gateway's provisioner key pair: RSA 2048 (its tokens are RS256). The gateway gets the
# public half; the load generator signs a fresh association token per session with the private one.
DG_KEY=
if want_path devolutions && [[ -n $DGATEWAY && -n $OPENSSL ]]; then
    if timeout 60 "$OPENSSL" genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/dg-provisioner.key" 2>/dev/null \
        && "$OPENSSL" pkey -in "$WORK/dg-provisioner.key" -pubout -out "$WORK/dg-provisioner.pub" 2>/dev/null; then
        DG_KEY=$WORK/dg-provisioner.key
    else
        log "openssl could not make an RSA key pair: devolutions path skipped"
    fi
fi

# --- An OpenSSH server for the ssh scenario (Debian's sshd on 127.0.0.1, keys made here) ------------
SSHD_PID= SSHD_ADDR= SSH_USER=$(id -un)
if want ssh && [[ -x $SSHD && -n $SSH_KEYGEN ]]; then
    for k in ssh_host ssh_client; do
        timeout 20 "$SSH_KEYGEN" -q -t ed25519 -N "" -C "portcullis-compare" -f "$WORK/$k" || die "ssh-keygen failed"
    done
    cp "$WORK/ssh_client.pub" "$WORK/authorized_keys"
    mkdir -p /run/sshd 2>/dev/null || true
    port=$(free_port)
    cat >"$WORK/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $port
HostKey $WORK/ssh_host
PidFile $WORK/sshd.pid
AuthorizedKeysFile $WORK/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
MaxStartups 200
MaxSessions 10
LogLevel ERROR
EOF
    spawn "$OUT/sshd.log" "$SSHD" -D -e -f "$WORK/sshd_config"
    SSHD_PID=$PID
    if wait_port "$port" 10; then
        SSHD_ADDR=127.0.0.1:$port
    else
        log "sshd did not start (see $OUT/sshd.log): ssh scenario skipped"
        stop "$SSHD_PID"
        SSHD_PID=
    fi
fi

# --- Raw ceilings: iperf3 over loopback, rustls alone -----------------------------------------------
if [[ -n $IPERF3 ]] && want throughput; then
    port=$(free_port)
    spawn "$OUT/iperf3-server.log" "$IPERF3" -s -1 -B 127.0.0.1 -p "$port"
    # Not wait_port: a probe connection would be the one test `-1` serves.
    for ((i = 0; i < 100; i++)); do grep -q 'Server listening' "$OUT/iperf3-server.log" && break; sleep 0.1; done
    log "iperf3: 1 stream over loopback for $(secs "$THROUGHPUT_DURATION") s"
    timeout $(($(secs "$THROUGHPUT_DURATION") + 20)) "$IPERF3" -c 127.0.0.1 -p "$port" -t "$(secs "$THROUGHPUT_DURATION")" -J \
        >"$OUT/iperf3.json" || log "iperf3 client failed"
    stop "$PID"
fi
if want connect; then
    log "rustls alone: in-memory handshakes on one core, ${RUSTLS_DURATION} s per kind"
    pin=()
    [[ -n $TASKSET ]] && pin=("$TASKSET" -c 0)
    certargs=()
    [[ -n $CERT ]] && certargs=(--cert "$CERT" --key "$KEY")
    timeout $((2 * RUSTLS_DURATION + 30)) "${pin[@]}" "$BIN/rustls-handshake" --duration "$RUSTLS_DURATION" \
        "${certargs[@]}" --json "$OUT/rustls.json" 2>&1 | sed 's/^/  /' >&2 || log "rustls-handshake failed"
fi
if want throughput; then
    # The crypto floor: the cipher work alone of one byte up and its echo down through a TLS relay.
    log "crypto floor: AES-128-GCM seal + open of 16 KiB records, one thread, $CRYPTO_DURATION"
    pin=()
    [[ -n $TASKSET ]] && pin=("$TASKSET" -c 0)
    timeout $(($(secs "$CRYPTO_DURATION") + 30)) "${pin[@]}" "$L" crypto-floor -d "$CRYPTO_DURATION" \
        --json "$OUT/crypto.json" 2>&1 | sed 's/^/  /' >&2 || log "crypto-floor failed"
fi

# --- One path: a target, a server, the scenarios -----------------------------------------------------
# run_path ID URL SERVER_PID [loadgen connection arguments...]
run_path() {
    local id=$1 url=$2 server=$3
    shift 3
    local conn=("$@") dir=$OUT/$id
    mkdir -p "$dir"
    local lat_n=$LATENCY_SESSIONS lat_r=$LATENCY_RATE idle_n=$IDLE_N
    if [[ $id == websockify* ]]; then
        if ((lat_n > WEBSOCKIFY_MAX_SESSIONS)); then
            # Same rate per session, fewer sessions.
            lat_r=$(awk -v r="$lat_r" -v n="$lat_n" -v m="$WEBSOCKIFY_MAX_SESSIONS" 'BEGIN {print r * m / n}')
            lat_n=$WEBSOCKIFY_MAX_SESSIONS
            log "$id: latency with $lat_n sessions at $lat_r msg/s (WEBSOCKIFY_MAX_SESSIONS)"
        fi
        ((idle_n > WEBSOCKIFY_MAX_SESSIONS)) && idle_n=$WEBSOCKIFY_MAX_SESSIONS
    fi
    local tls=()
    [[ $url == wss://* && ${TLS_RESUME:-0} != 1 ]] && tls=(--no-tls-resume)
    if want throughput; then
        log "$id: throughput, 1 session, $THROUGHPUT_DURATION"
        local t0 t1
        t0=$(cpu_s "$server")
        timeout -k 5 $(($(secs "$THROUGHPUT_DURATION") + 30)) "$L" throughput "$url" "${conn[@]}" -q \
            --workers "$LOADGEN_WORKERS" -n 1 -d "$THROUGHPUT_DURATION" --json "$dir/throughput.json" >&2 \
            || log "$id: throughput failed"
        t1=$(cpu_s "$server")
        awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", b - a}' >"$dir/throughput_cpu_s"
    fi
    if want latency; then
        log "$id: latency, $lat_n sessions, $lat_r msg/s, $LATENCY_DURATION"
        timeout -k 5 $(($(secs "$LATENCY_DURATION") + 120)) "$L" latency "$url" "${conn[@]}" -q \
            --workers "$LOADGEN_WORKERS" -n "$lat_n" -r "$lat_r" -d "$LATENCY_DURATION" --size "$LATENCY_SIZE" \
            --json "$dir/latency.json" >&2 || log "$id: latency failed"
    fi
    if want connect; then
        log "$id: connect, $CONNECT_LOOPS loops, $CONNECT_DURATION"
        local c0 c1
        c0=$(cpu_s "$server")
        timeout -k 5 $(($(secs "$CONNECT_DURATION") + 60)) "$L" connect "$url" "${conn[@]}" "${tls[@]}" -q \
            --workers "$LOADGEN_CONNECT_WORKERS" -n "$CONNECT_LOOPS" -d "$CONNECT_DURATION" --probe \
            --json "$dir/connect.json" >&2 || log "$id: connect failed"
        c1=$(cpu_s "$server")
        awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.3f\n", b - a}' >"$dir/connect_cpu_s"
        sleep 1 # let closing connections settle before the next scenario
    fi
    if want idle; then
        log "$id: idle, $idle_n sessions held $IDLE_HOLD"
        timeout -k 5 $((idle_n / 50 + $(secs "$IDLE_HOLD") + 120)) "$L" idle "$url" "${conn[@]}" -q \
            --workers "$LOADGEN_CONNECT_WORKERS" -n "$idle_n" --concurrency 256 --hold "$IDLE_HOLD" --pid "$server" \
            --json "$dir/idle.json" >&2 || log "$id: idle failed"
    fi
}

# run_ssh ID URL SERVER_PID [loadgen connection arguments...]: whole SSH sessions through the path.
run_ssh() {
    local id=$1 url=$2 server=$3
    shift 3
    local conn=("$@") dir=$OUT/$id c0 c1
    mkdir -p "$dir"
    [[ $url == wss://* ]] && conn+=(--no-tls-resume)
    log "$id: ssh, $SSH_CONCURRENCY sessions in flight, $SSH_DURATION"
    [[ -n $server ]] && c0=$(cpu_s "$server")
    timeout -k 5 $(($(secs "$SSH_DURATION") + 60)) "$L" ssh "$url" "${conn[@]}" -q --workers "$LOADGEN_WORKERS" \
        -c "$SSH_CONCURRENCY" -d "$SSH_DURATION" --ssh-user "$SSH_USER" --ssh-key "$WORK/ssh_client" \
        --known-host-key "$WORK/ssh_host.pub" --json "$dir/ssh.json" >&2 || log "$id: ssh failed"
    if [[ -n $server ]]; then
        c1=$(cpu_s "$server")
        awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.3f\n", b - a}' >"$dir/ssh_cpu_s"
    fi
}

# A fresh echo target for one path; sets TARGET (address) and TARGET_PID.
start_target() {
    local logfile=$1
    spawn "$logfile" "$L" target --listen 127.0.0.1:0 --mode echo
    TARGET_PID=$PID
    local i
    for ((i = 0; i < 100; i++)); do
        # The log may not exist yet: the spawned process's shell creates it.
        TARGET=$(sed -n 's/^portcullis-loadgen target: echo on //p' "$logfile" 2>/dev/null || true)
        [[ -n $TARGET ]] && return 0
        sleep 0.1
    done
    die "the echo target did not start (see $logfile)"
}

# Starts path $1's server in front of the TCP address $2 (its log named after $3); sets URL, SRV
# (its pid; empty for the direct path) and CONN (the load generator's connection arguments).
start_bridge() {
    local path=$1 target=$2 tag=$3 port
    port=$(free_port)
    CONN=()
    case $path in
    direct)
        URL="tcp://$target" SRV=
        return 0
        ;;
    portcullis | rd-gateway)
        # rd-gateway: the same configuration, the target declared `rdp` (the RD Gateway reaches
        # only those; it does not parse RDP, so the echo target serves).
        local tls_section="" protocol=tcp
        [[ $path == rd-gateway ]] && protocol=rdp
        [[ -n $CERT ]] && tls_section=$(printf '[tls]\ncert = "%s"\nkey = "%s"' "$CERT" "$KEY")
        cat >"$WORK/gw.toml" <<EOF
listen = "127.0.0.1:$port"
workers = $WORKERS
$tls_section
[auth]
token_public_key = "token.pub"
[audit]
path = "audit.jsonl"
$LIMITS_SECTION
[[target]]
name = "t"
address = "$target"
protocol = "$protocol"
[[user]]
name = "bench"
targets = ["t"]
EOF
        spawn "$OUT/$tag.log" "${SERVER_PIN[@]}" "$GATEWAY" serve --config "$WORK/gw.toml"
        URL="wss://127.0.0.1:$port" CONN=(--insecure --token-key "$WORK/token.key" --user bench --target t)
        [[ $path == rd-gateway ]] && CONN+=(--rd-gateway)
        mkdir -p "$OUT/$path" && echo "$WORKERS" >"$OUT/$path/workers"
        ;;
    websockify | websockify-tls)
        local args=()
        [[ $path == websockify-tls ]] && args=(--cert "$CERT" --key "$KEY" --ssl-only)
        spawn "$OUT/$tag.log" "${SERVER_PIN[@]}" "$WEBSOCKIFY" "${args[@]}" "127.0.0.1:$port" "$target"
        URL="ws://127.0.0.1:$port" CONN=(--no-auth --path /)
        [[ $path == websockify-tls ]] && URL="wss://127.0.0.1:$port" CONN+=(--insecure)
        ;;
    websocat)
        spawn "$OUT/$tag.log" "${SERVER_PIN[@]}" "$WEBSOCAT" --binary "ws-l:127.0.0.1:$port" "tcp:$target"
        URL="ws://127.0.0.1:$port" CONN=(--no-auth --path /)
        ;;
    websocat-tls)
        spawn "$OUT/$tag.log" "${SERVER_PIN[@]}" "$WEBSOCAT" --binary --pkcs12-der "$P12" "wss-l:127.0.0.1:$port" "tcp:$target"
        URL="wss://127.0.0.1:$port" CONN=(--no-auth --path / --insecure)
        ;;
    devolutions)
        # Its own configuration directory (it keeps its logs, databases and state there); an
        # https:// listener for the tunnels and the tcp:// one its configuration expects.
        local dir=$WORK/dgateway-$tag tcp_port
        tcp_port=$(free_port)
        mkdir -p "$dir"
        cat >"$dir/gateway.json" <<EOF
{
  "Hostname": "localhost",
  "ProvisionerPublicKeyFile": "$WORK/dg-provisioner.pub",
  "TlsCertificateSource": "External",
  "TlsCertificateFile": "$CERT",
  "TlsPrivateKeyFile": "$KEY",
  "Listeners": [
    { "InternalUrl": "https://127.0.0.1:$port", "ExternalUrl": "https://localhost:$port" },
    { "InternalUrl": "tcp://127.0.0.1:$tcp_port", "ExternalUrl": "tcp://localhost:$tcp_port" }
  ]
}
EOF
        spawn "$OUT/$tag.log" "${SERVER_PIN[@]}" env DGATEWAY_CONFIG_PATH="$dir" "$DGATEWAY"
        URL="wss://127.0.0.1:$port" CONN=(--insecure --devolutions-key "$DG_KEY" --devolutions-dst "$target")
        ;;
    wstunnel)
        # Only the path's target is allowed; its default log level (INFO) is kept, as every
        # server's here. --websocket-mask-frame: unmask what clients send. Without it the server
        # passes payload on as it arrives, which is right only for wstunnel's own client (it does
        # not mask by default); the load generator masks, as RFC 6455 clients must.
        spawn "$OUT/$tag.log" "${SERVER_PIN[@]}" "$WSTUNNEL" server --tls-certificate "$CERT" --tls-private-key "$KEY" \
            --websocket-mask-frame --restrict-to "$target" "wss://127.0.0.1:$port"
        URL="wss://127.0.0.1:$port" CONN=(--insecure --wstunnel-dst "$target")
        ;;
    *) die "unknown path $path (known: direct portcullis rd-gateway websockify websockify-tls websocat websocat-tls devolutions wstunnel)" ;;
    esac
    SRV=$PID
    wait_port "$port" 20 || die "$path did not start (see $OUT/$tag.log)"
}

# Whether path $1 can run here (its program, and a certificate for the TLS ones).
path_available() {
    case $1 in
    websockify) [[ -n $WEBSOCKIFY ]] ;;
    websockify-tls) [[ -n $WEBSOCKIFY && -n $CERT ]] ;;
    websocat) [[ -n $WEBSOCAT ]] ;;
    websocat-tls) [[ -n $WEBSOCAT && -n $P12 ]] ;;
    devolutions) [[ -n $DGATEWAY && -n $CERT && -n $DG_KEY ]] ;;
    wstunnel) [[ -n $WSTUNNEL && -n $CERT ]] ;;
    *) true ;;
    esac
}

ECHO_SCENARIOS=false
for s in throughput latency connect idle; do want "$s" && ECHO_SCENARIOS=true; done

for path in $PATHS; do
    path_available "$path" || continue
    if $ECHO_SCENARIOS; then
        start_target "$OUT/$path-target.log"
        start_bridge "$path" "$TARGET" "$path"
        # On the direct path the "server" is the echo target itself.
        run_path "$path" "$URL" "${SRV:-$TARGET_PID}" "${CONN[@]}"
        if [[ -n $SRV ]]; then stop "$SRV"; fi
        stop "$TARGET_PID"
    fi
    if [[ -n $SSHD_PID ]]; then
        start_bridge "$path" "$SSHD_ADDR" "$path-ssh"
        run_ssh "$path" "$URL" "$SRV" "${CONN[@]}"
        if [[ -n $SRV ]]; then stop "$SRV"; fi
    fi
done

if want fleet && [[ -x /usr/bin/redis-server && -x /usr/sbin/haproxy ]]; then
    log "fleet: local store vs Redis, then ${FLEET_NODES:-3} gateways behind HAProxy (benches/fleet.sh)"
    # Same client, same gateway binary, same connect load as the paths above.
    OUT="$OUT/fleet" GATEWAY_BIN="$GATEWAY" ROUNDS=${FLEET_ROUNDS:-3} NODES=${FLEET_NODES:-3} \
        CONNECT_DURATION=$CONNECT_DURATION CONNECT_LOOPS=$CONNECT_LOOPS \
        IDLE_SESSIONS=$((IDLE_N < 3000 ? IDLE_N : 3000)) IDLE_HOLD=$IDLE_HOLD \
        bash "$ROOT/benches/fleet.sh" >"$OUT/fleet.log" 2>&1 || log "fleet: failed (see $OUT/fleet.log)"
fi

LOAD_AFTER=$(cut -d' ' -f1 /proc/loadavg)
log "done (load average before $LOAD_BEFORE, after $LOAD_AFTER)"
"$BIN/compare-report" "$OUT"
