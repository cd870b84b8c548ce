#!/usr/bin/env bash
# Make sure a Redis answers on 127.0.0.1:${REDIS_PORT:-6379}: start a local, non-persistent
# redis-server if none does. The job tests use its database 15; `make test` runs this first.
set -euo pipefail

PORT="${REDIS_PORT:-6379}"

answers() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = "PONG" ]
    else  # no redis-cli: speak the protocol by hand
        exec 3<>"/dev/tcp/127.0.0.1/$PORT" 2>/dev/null || return 1
        printf 'PING\r\n' >&3
        local reply
        IFS= read -r -t 2 reply <&3 || reply=""
        exec 3>&-
        [ "${reply%$'\r'}" = "+PONG" ]
    fi
}

if answers; then
    echo "redis: already answering on 127.0.0.1:$PORT"
    exit 0
fi

if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis: nothing answers on 127.0.0.1:$PORT and redis-server is not installed." >&2
    echo "       install it (e.g. apt-get install redis-server) or set REDIS_URL to a running one." >&2
    exit 1
fi

redis-server --daemonize yes --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no >/dev/null
for _ in $(seq 1 50); do
    if answers; then
        echo "redis: started on 127.0.0.1:$PORT"
        exit 0
    fi
    sleep 0.1
done
echo "redis: started redis-server but it does not answer on 127.0.0.1:$PORT" >&2
exit 1
