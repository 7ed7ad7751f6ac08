#!/usr/bin/env bash
# Real Redis servers for the Redis store's integration tests, on loopback only.
#
# Run a command with the servers up (they are stopped when it ends, whatever its result):
#     bash .ci/redis.sh cargo test --features redis --test redis_store
# Or source it (from bash) and stop the servers yourself:
#     source .ci/redis.sh && trap cogwheel_redis_stop EXIT
#
# It installs redis-server, redis-tools and openssl with apt-get if they are missing (see
# .ci/apt.sh), starts one single node, a durable node and one 3-primary cluster (no replicas) on
# free ports of 127.0.0.1 below the ephemeral port range, under a temporary directory, waits
# until they serve (retrying on another port when one was taken meanwhile), and exports:
#     COGWHEEL_REDIS_URL            redis://127.0.0.1:PORT  (the single node)
#     COGWHEEL_REDIS_PORT           its port
#     COGWHEEL_REDIS_DIR            its working directory (log: redis.log)
#     COGWHEEL_REDIS_RESTART_CMD    the command line that (re)starts it, daemonized: a test
#                                   may `redis-cli -p PORT shutdown nosave` and run this
#     COGWHEEL_REDIS_CLUSTER_URLS   redis://127.0.0.1:P1,redis://127.0.0.1:P2,redis://127.0.0.1:P3
#     COGWHEEL_REDIS_TLS_URL        rediss://:PASSWORD@127.0.0.1:PORT/#insecure  (only when openssl
#                                   is installed and the node answered: a TLS-only node with a
#                                   self-signed certificate and a password; `#insecure` skips
#                                   certificate verification).

_cw_sourced=0
(return 0 2>/dev/null) && _cw_sourced=1

_cw_log() { echo "redis.sh: $*" >&2; }

# shellcheck source=.ci/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh" || return 1 2>/dev/null || exit 1

# redis-server and redis-cli are needed; openssl only for the TLS node (a failed install of it
# alone is not fatal: there is just no TLS node).
cogwheel_redis_install() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    command -v openssl >/dev/null || missing+=(openssl)
    [ ${#missing[@]} -eq 0 ] && return 0
    cw_apt_install "${missing[@]}"
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null
}

# Sets _cw_port to a TCP port on 127.0.0.1 with nothing listening on it, nor on port+10000 (the
# cluster bus), and not handed out before. Both stay below the ephemeral port range (where the
# kernel picks the local ports of outgoing connections, which could take a port between this
# check and the server's bind): ports from 12000 up to 22000, or less if that range starts below
# 32000. (A variable, not output: `$(...)` would run in a subshell and forget the ports already
# taken.)
_cw_free_port() {
    local p tries=0 low top
    { read -r low _ </proc/sys/net/ipv4/ip_local_port_range; } 2>/dev/null || low=32768
    case "$low" in '' | *[!0-9]*) low=32768 ;; esac
    top=$((low - 10000))
    [ "$top" -gt 22000 ] && top=22000
    if [ "$top" -lt 13000 ]; then
        _cw_log "the ephemeral port range starts at $low: ports may collide with it"
        top=22000
    fi
    while [ $tries -lt 200 ]; do
        p=$((12000 + RANDOM % (top - 12000)))
        tries=$((tries + 1))
        case " ${_cw_taken:-} " in *" $p "* | *" $((p + 10000)) "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null &&
            ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null; then
            _cw_taken="${_cw_taken:-} $p $((p + 10000))"
            _cw_port=$p
            return 0
        fi
    done
    _cw_log "no free port found"
    return 1
}

# The TLS node's password.
_cw_tls_pass=cw-tls-pass

# `_cw_ping plain|tls PORT`: what the server on PORT answers to PING (bounded: whatever took
# the port may accept connections and never answer).
_cw_ping() {
    if [ "$1" = tls ]; then
        timeout 5 redis-cli --tls --insecure -a "$_cw_tls_pass" --no-auth-warning -h 127.0.0.1 -p "$2" ping 2>/dev/null
    else
        timeout 5 redis-cli -h 127.0.0.1 -p "$2" ping 2>/dev/null
    fi
}

# `_cw_wait_ping plain|tls PORT DIR`: wait (bounded: ~20 s) until the server answers PONG.
# Gives up at once when its log (DIR/redis.log) says the port was taken.
_cw_wait_ping() {
    local kind=$1 port=$2 dir=$3 i
    for i in $(seq 1 200); do
        if grep -q "Address already in use" "$dir/redis.log" 2>/dev/null; then
            _cw_log "port $port was taken before redis could bind it"
            return 1
        fi
        [ "$(_cw_ping "$kind" "$port")" = "PONG" ] && return 0
        sleep 0.1
    done
    _cw_log "redis on port $port did not answer"
    return 1
}

# Before a retry: stop the server whose pid file is in DIR, if any, and remove what it left
# (its log, whose "Address already in use" must not fail the next attempt, and a cluster node's
# config), but not a TLS node's certificate.
_cw_kill_dir() {
    local dir=$1 pid
    pid=$(cat "$dir/redis.pid" 2>/dev/null) || pid=""
    if [ -n "$pid" ]; then
        kill -9 "$pid" 2>/dev/null || true
    fi
    find "$dir" -mindepth 1 -maxdepth 1 ! -name '*.pem' -exec rm -rf {} +
}

_cw_server_cmd() {
    # port dir [extra args...]
    local port=$1 dir=$2
    shift 2
    echo "redis-server --bind 127.0.0.1 --port $port --dir $dir --daemonize yes" \
        "--pidfile $dir/redis.pid --logfile $dir/redis.log --save '' --appendonly no $*"
}

# `_cw_start plain|tls DIR [extra args...]`: start a daemonized redis-server on a free port
# (working directory, pid file and log in DIR) and wait until it answers. A port can still be
# taken between the check and the bind: then it tries another one (three attempts in all).
# Sets _cw_port and _cw_cmd (the command line that (re)starts the server).
_cw_start() {
    local kind=$1 dir=$2 attempt
    shift 2
    mkdir -p "$dir" || return 1
    for attempt in 1 2 3; do
        _cw_free_port || return 1
        if [ "$kind" = tls ]; then
            _cw_cmd="redis-server --bind 127.0.0.1 --port 0 --tls-port $_cw_port --dir $dir --daemonize yes"
            _cw_cmd+=" --pidfile $dir/redis.pid --logfile $dir/redis.log --save '' --appendonly no"
            _cw_cmd+=" --tls-cert-file $dir/cert.pem --tls-key-file $dir/key.pem --tls-auth-clients no"
            _cw_cmd+=" --requirepass $_cw_tls_pass"
        else
            _cw_cmd=$(_cw_server_cmd "$_cw_port" "$dir" "$@")
        fi
        # A server that cannot start at all (bad arguments) fails here, before it daemonizes:
        # another port would not help.
        eval "$_cw_cmd" || return 1
        _cw_wait_ping "$kind" "$_cw_port" "$dir" && return 0
        if [ $attempt -lt 3 ]; then
            _cw_log "retrying on another port; the failed server's log:"
            tail -n 5 "$dir/redis.log" >&2 2>/dev/null || true
            _cw_kill_dir "$dir"
        fi
    done
    tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
    return 1
}

cogwheel_redis_start() {
    cogwheel_redis_install || return 1
    COGWHEEL_REDIS_TMP=$(mktemp -d "${TMPDIR:-/tmp}/cogwheel-redis.XXXXXX") || return 1
    export COGWHEEL_REDIS_TMP

    # The single node.
    local port dir
    dir="$COGWHEEL_REDIS_TMP/single"
    _cw_start plain "$dir" || return 1
    port=$_cw_port
    COGWHEEL_REDIS_RESTART_CMD=$_cw_cmd
    export COGWHEEL_REDIS_PORT=$port COGWHEEL_REDIS_DIR=$dir COGWHEEL_REDIS_RESTART_CMD
    export COGWHEEL_REDIS_URL="redis://127.0.0.1:$port"

    # A durable node: an fsync'd append-only file, so a server killed with SIGKILL and
    # restarted keeps every write it acknowledged (tests/redis_cache.rs checks that nothing the
    # cache flushed is lost across such a crash).
    dir="$COGWHEEL_REDIS_TMP/durable"
    _cw_start plain "$dir" --appendonly yes --appendfsync always || return 1
    port=$_cw_port
    COGWHEEL_REDIS_DURABLE_RESTART_CMD=$_cw_cmd
    export COGWHEEL_REDIS_DURABLE_PORT=$port COGWHEEL_REDIS_DURABLE_DIR=$dir COGWHEEL_REDIS_DURABLE_RESTART_CMD
    export COGWHEEL_REDIS_DURABLE_URL="redis://127.0.0.1:$port"

    # The cluster: three primaries, no replicas.
    local ports=() urls=() addrs=() p n
    for n in 1 2 3; do
        dir="$COGWHEEL_REDIS_TMP/cluster-$n"
        _cw_start plain "$dir" --cluster-enabled yes \
            --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 5000 || return 1
        p=$_cw_port
        ports+=("$p")
        urls+=("redis://127.0.0.1:$p")
        addrs+=("127.0.0.1:$p")
    done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$COGWHEEL_REDIS_TMP/cluster-create.log" 2>&1 || {
        _cw_log "cluster create failed:"
        cat "$COGWHEEL_REDIS_TMP/cluster-create.log" >&2
        return 1
    }
    local ok i
    for i in $(seq 1 200); do
        ok=1
        for p in "${ports[@]}"; do
            redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || ok=0
        done
        [ $ok = 1 ] && break
        sleep 0.1
    done
    if [ $ok != 1 ]; then
        _cw_log "cluster did not reach cluster_state:ok"
        return 1
    fi
    # A TLS-only node with a password, when openssl can make it a certificate. Its URL is
    # exported only once it answered; otherwise the TLS test says it skipped (a redis-server
    # built without TLS is not a reason to fail the other tests).
    unset COGWHEEL_REDIS_TLS_URL
    local tls_problem=""
    if ! command -v openssl >/dev/null; then
        tls_problem="openssl is not installed"
    else
        dir="$COGWHEEL_REDIS_TMP/tls"
        mkdir -p "$dir"
        if ! openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
            -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1; then
            tls_problem="openssl could not make a certificate"
        elif ! _cw_start tls "$dir"; then
            tls_problem="the TLS node did not start or did not answer"
        else
            export COGWHEEL_REDIS_TLS_URL="rediss://:$_cw_tls_pass@127.0.0.1:$_cw_port/#insecure"
        fi
    fi
    if [ -n "$tls_problem" ]; then
        _cw_log "$tls_problem; no TLS node (the TLS test will be skipped)"
    fi

    COGWHEEL_REDIS_CLUSTER_PORTS="${ports[*]}"
    COGWHEEL_REDIS_CLUSTER_URLS=$(IFS=,; echo "${urls[*]}")
    export COGWHEEL_REDIS_CLUSTER_PORTS COGWHEEL_REDIS_CLUSTER_URLS
    _cw_log "single node $COGWHEEL_REDIS_URL; cluster $COGWHEEL_REDIS_CLUSTER_URLS; tls ${COGWHEEL_REDIS_TLS_URL:-none}"
}

# Stop every server this script started (by the pid files in its own directory) and remove it.
cogwheel_redis_stop() {
    [ -n "${COGWHEEL_REDIS_TMP:-}" ] && [ -d "$COGWHEEL_REDIS_TMP" ] || return 0
    local pidfile pid i
    for pidfile in "$COGWHEEL_REDIS_TMP"/*/redis.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile" 2>/dev/null) || continue
        [ -n "$pid" ] || continue
        kill "$pid" 2>/dev/null || continue
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$COGWHEEL_REDIS_TMP"
    unset COGWHEEL_REDIS_TMP
}

if [ $_cw_sourced = 1 ]; then
    cogwheel_redis_start || {
        cogwheel_redis_stop
        return 1
    }
else
    set -uo pipefail
    trap cogwheel_redis_stop EXIT
    cogwheel_redis_start || exit 1
    if [ $# -gt 0 ]; then
        "$@"
    else
        _cw_log "servers up; no command given, stopping them"
    fi
fi
