#!/usr/bin/env bash
# Real Redis servers for the Redis store's integration tests, on loopback only.
#
# Run a command with the servers up (they are stopped when it ends, whatever its result):
#     bash .ci/redis.sh cargo test --features redis --test redis_store
# Or source it (from bash) and stop the servers yourself:
#     source .ci/redis.sh && trap cogwheel_redis_stop EXIT
#
# It installs redis-server and redis-tools with apt-get if they are missing, starts one single
# node and one 3-primary cluster (no replicas) on free ports of 127.0.0.1 under a temporary
# directory, waits until they serve, and exports:
#     COGWHEEL_REDIS_URL            redis://127.0.0.1:PORT  (the single node)
#     COGWHEEL_REDIS_PORT           its port
#     COGWHEEL_REDIS_DIR            its working directory (log: redis.log)
#     COGWHEEL_REDIS_RESTART_CMD    the command line that (re)starts it, daemonized: a test
#                                   may `redis-cli -p PORT shutdown nosave` and run this
#     COGWHEEL_REDIS_CLUSTER_URLS   redis://127.0.0.1:P1,redis://127.0.0.1:P2,redis://127.0.0.1:P3
#     COGWHEEL_REDIS_TLS_URL        rediss://:PASSWORD@127.0.0.1:PORT/#insecure  (only when openssl
#                                   is installed: a TLS-only node with a self-signed certificate
#                                   and a password; `#insecure` skips certificate verification)

_cw_sourced=0
(return 0 2>/dev/null) && _cw_sourced=1

_cw_log() { echo "redis.sh: $*" >&2; }

cogwheel_redis_install() {
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
        return 0
    fi
    _cw_log "installing redis-server and redis-tools"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
}

# Sets _cw_port to a TCP port on 127.0.0.1 with nothing listening on it, nor on port+10000 (the
# cluster bus), and not handed out before. (A variable, not output: `$(...)` would run in a
# subshell and forget the ports already taken.)
_cw_free_port() {
    local p tries=0
    while [ $tries -lt 200 ]; do
        p=$((20000 + RANDOM % 30000))
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

# Wait (bounded: ~20 s) until `redis-cli -p PORT ping` answers PONG.
_cw_wait_ping() {
    local port=$1 i
    for i in $(seq 1 200); do
        [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ] && return 0
        sleep 0.1
    done
    _cw_log "redis on port $port did not answer"
    return 1
}

_cw_server_cmd() {
    # port dir [extra args...]
    local port=$1 dir=$2
    shift 2
    echo "redis-server --bind 127.0.0.1 --port $port --dir $dir --daemonize yes" \
        "--pidfile $dir/redis.pid --logfile $dir/redis.log --save '' --appendonly no $*"
}

cogwheel_redis_start() {
    cogwheel_redis_install || return 1
    COGWHEEL_REDIS_TMP=$(mktemp -d "${TMPDIR:-/tmp}/cogwheel-redis.XXXXXX") || return 1
    export COGWHEEL_REDIS_TMP

    # The single node.
    local port dir
    _cw_free_port || return 1
    port=$_cw_port
    dir="$COGWHEEL_REDIS_TMP/single"
    mkdir -p "$dir"
    COGWHEEL_REDIS_RESTART_CMD=$(_cw_server_cmd "$port" "$dir")
    eval "$COGWHEEL_REDIS_RESTART_CMD" || return 1
    _cw_wait_ping "$port" || return 1
    export COGWHEEL_REDIS_PORT=$port COGWHEEL_REDIS_DIR=$dir COGWHEEL_REDIS_RESTART_CMD
    export COGWHEEL_REDIS_URL="redis://127.0.0.1:$port"

    # A durable node: an fsync'd append-only file, so a server killed with SIGKILL and
    # restarted keeps every write it acknowledged (tests/redis_cache.rs checks that nothing the
    # cache flushed is lost across such a crash).
    _cw_free_port || return 1
    port=$_cw_port
    dir="$COGWHEEL_REDIS_TMP/durable"
    mkdir -p "$dir"
    COGWHEEL_REDIS_DURABLE_RESTART_CMD=$(_cw_server_cmd "$port" "$dir" --appendonly yes --appendfsync always)
    eval "$COGWHEEL_REDIS_DURABLE_RESTART_CMD" || return 1
    _cw_wait_ping "$port" || return 1
    export COGWHEEL_REDIS_DURABLE_PORT=$port COGWHEEL_REDIS_DURABLE_DIR=$dir COGWHEEL_REDIS_DURABLE_RESTART_CMD
    export COGWHEEL_REDIS_DURABLE_URL="redis://127.0.0.1:$port"

    # The cluster: three primaries, no replicas.
    local ports=() urls=() addrs=() p
    for _ in 1 2 3; do
        _cw_free_port || return 1
        p=$_cw_port
        dir="$COGWHEEL_REDIS_TMP/cluster-$p"
        mkdir -p "$dir"
        eval "$(_cw_server_cmd "$p" "$dir" --cluster-enabled yes \
            --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 5000)" || return 1
        ports+=("$p")
        urls+=("redis://127.0.0.1:$p")
        addrs+=("127.0.0.1:$p")
    done
    for p in "${ports[@]}"; do _cw_wait_ping "$p" || return 1; done
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
    # A TLS-only node with a password, when openssl can make it a certificate.
    if command -v openssl >/dev/null; then
        _cw_free_port || return 1
        p=$_cw_port
        dir="$COGWHEEL_REDIS_TMP/tls"
        mkdir -p "$dir"
        if openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
            -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1; then
            eval "redis-server --bind 127.0.0.1 --port 0 --tls-port $p --dir $dir --daemonize yes" \
                "--pidfile $dir/redis.pid --logfile $dir/redis.log --save '' --appendonly no" \
                "--tls-cert-file $dir/cert.pem --tls-key-file $dir/key.pem --tls-auth-clients no" \
                "--requirepass cw-tls-pass" || return 1
            for i in $(seq 1 200); do
                [ "$(redis-cli --tls --insecure -a cw-tls-pass --no-auth-warning -h 127.0.0.1 -p "$p" ping 2>/dev/null)" = "PONG" ] && break
                sleep 0.1
            done
            export COGWHEEL_REDIS_TLS_URL="rediss://:cw-tls-pass@127.0.0.1:$p/#insecure"
        else
            _cw_log "openssl could not make a certificate; no TLS node"
        fi
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
