#!/usr/bin/env bash
# Make sure PostgreSQL, Redis and RabbitMQ answer on 127.0.0.1 before the integration
# tests run: check each one, start it if it is down, install it with apt-get if it is
# missing. Prints one line per service; exits non-zero naming the service that failed.
# Also installs ffmpeg (the media kit's video and audio jobs) when it is missing.
set -euo pipefail

readonly HOST=127.0.0.1
readonly PG_PORT=5432
readonly REDIS_PORT=6379
readonly AMQP_PORT=5672
readonly WAIT_S=60

# rabbitmq-server and rabbitmq-diagnostics live in /usr/sbin, not on a normal user's PATH.
export PATH="$PATH:/usr/sbin:/sbin"

APT_UPDATED=0
WORK_DIR=$(mktemp -d)
trap 'rm -rf "$WORK_DIR"' EXIT

die() {
    printf 'ensure-services: %s\n' "$*" >&2
    exit 1
}

have() {
    command -v "$1" >/dev/null 2>&1
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif have sudo; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# Runs a command whose output only matters when it fails; then it is shown in full.
quietly() {
    local service=$1 log="$WORK_DIR/$1.log"
    shift
    if ! "$@" >>"$log" 2>&1; then
        cat "$log" >&2
        die "$service: '$*' failed"
    fi
}

apt_install() {
    local service=$1
    shift
    have apt-get || die "$service: not installed and apt-get is not available; install: $*"
    if [[ $APT_UPDATED -eq 0 ]]; then
        quietly "$service" as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    quietly "$service" as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@"
}

tcp_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# Polls the check function until it succeeds or WAIT_S seconds have passed.
wait_until() {
    local check=$1 deadline=$((SECONDS + WAIT_S))
    until "$check"; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

# Brings one service up: the check, start and install functions are named after it.
ensure() {
    local name=$1 up=$2 start=$3 installed=$4 package=$5 how
    if "$up"; then
        how="up (already running)"
    else
        how="started"
        if ! "$installed"; then
            apt_install "$name" "$package"
            how="installed and started"
        fi
        # Installing may already have started it (Debian postinst), so check again. A
        # failed start is not fatal yet: "already running" races are settled by waiting.
        "$up" || "$start" "$WORK_DIR/$name.log" || true
        if ! wait_until "$up"; then
            cat "$WORK_DIR/$name.log" >&2 2>/dev/null || true
            die "$name: still not answering after ${WAIT_S}s ($(hint_"$name"))"
        fi
    fi
    STATUS="$name: $how"
}

# PostgreSQL -------------------------------------------------------------------------

# The newest installed version with a "main" cluster; empty when there is none.
postgres_version() {
    { find /etc/postgresql -mindepth 2 -maxdepth 2 -name main -type d 2>/dev/null || true; } |
        awk -F/ '{print $4}' | sort -V | tail -n 1
}

postgresql_up() {
    if have pg_isready; then
        pg_isready -h "$HOST" -p "$PG_PORT" -t 3 -q
    else
        tcp_open "$PG_PORT"
    fi
}

postgresql_installed() {
    have pg_ctlcluster && [[ -n $(postgres_version) ]]
}

postgresql_start() {
    local log=$1 version
    version=$(postgres_version)
    [[ -n $version ]] || die "postgresql: no cluster in /etc/postgresql (create one: pg_createcluster)"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >>"$log" 2>&1
}

hint_postgresql() {
    echo "$HOST:$PG_PORT; see /var/log/postgresql/postgresql-$(postgres_version)-main.log"
}

postgresql_trust_query() {
    # No password from the environment or ~/.pgpass: the point is that none is needed.
    env -u PGPASSWORD PGPASSFILE="$WORK_DIR/no-pgpass" PGCONNECT_TIMEOUT=5 \
        psql -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -XAtqw -c 'select 1' 2>&1
}

# The tests connect as postgres over TCP without a password; fail here, not in 200 tests.
# A cluster this script installed itself is a throwaway test server: it is given trust auth
# on loopback. An existing server's auth is never changed, only diagnosed.
postgresql_check_trust() {
    local output hba
    have psql || apt_install postgresql postgresql-client
    hba="/etc/postgresql/$(postgres_version)/main/pg_hba.conf"
    if ! postgresql_trust_query >/dev/null && [[ $STATUS == *"installed and started"* ]]; then
        as_root sed -i "1i host all all $HOST/32 trust" "$hba"
        as_root pg_ctlcluster --skip-systemctl-redirect "$(postgres_version)" main reload
        sleep 1
    fi
    if ! output=$(postgresql_trust_query); then
        die "postgresql: up, but 'psql -h $HOST -U postgres' failed: ${output//$'\n'/ }." \
            "The tests need role postgres with trust auth over TCP: put" \
            "'host all all $HOST/32 trust' first in $hba," \
            "then: pg_ctlcluster $(postgres_version) main reload"
    fi
}

# Redis ------------------------------------------------------------------------------

redis_up() {
    if have redis-cli; then
        [[ $(timeout 3 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
    else
        tcp_open "$REDIS_PORT"
    fi
}

redis_installed() {
    have redis-server
}

redis_start() {
    # No persistence: test data is disposable and a dump file would outlive the run.
    redis-server --daemonize yes --bind "$HOST" --port "$REDIS_PORT" --save "" --appendonly no \
        >>"$1" 2>&1
}

hint_redis() {
    echo "$HOST:$REDIS_PORT; try: redis-server --bind $HOST --port $REDIS_PORT"
}

# RabbitMQ ---------------------------------------------------------------------------

# The port opens before the broker is ready, so the CLI ping confirms it when it can run:
# it needs the Erlang cookie, readable only by root or the rabbitmq user.
rabbitmq_up() {
    tcp_open "$AMQP_PORT" || return 1
    have rabbitmq-diagnostics || return 0
    if [[ $EUID -eq 0 ]]; then
        timeout 20 rabbitmq-diagnostics -q ping >/dev/null 2>&1
    elif have sudo && sudo -n true 2>/dev/null; then
        timeout 20 sudo -n rabbitmq-diagnostics -q ping >/dev/null 2>&1
    fi
}

rabbitmq_installed() {
    have rabbitmq-server
}

rabbitmq_start() {
    as_root rabbitmq-server -detached >>"$1" 2>&1
}

hint_rabbitmq() {
    echo "$HOST:$AMQP_PORT; see /var/log/rabbitmq/"
}

# ffmpeg/ffprobe: the media kit's video and audio jobs (issue 13) and their tests.
ensure_ffmpeg() {
    if have ffmpeg && have ffprobe; then
        STATUS="ffmpeg: present"
    else
        apt_install ffmpeg ffmpeg
        STATUS="ffmpeg: installed"
    fi
}

main() {
    ensure postgresql postgresql_up postgresql_start postgresql_installed postgresql
    postgresql_check_trust
    echo "$STATUS"
    ensure redis redis_up redis_start redis_installed redis-server
    echo "$STATUS"
    ensure rabbitmq rabbitmq_up rabbitmq_start rabbitmq_installed rabbitmq-server
    echo "$STATUS"
    ensure_ffmpeg
    echo "$STATUS"
}

main "$@"
