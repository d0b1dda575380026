#!/usr/bin/env bash
# context.sh — what the context stage costs per request, per context-store backend. For each
# backend (Memory, File, Redis, PostgreSQL) it starts one ctxgate with two routes over the same
# OpenAI-compatible target (the yardstick's nginx mock): /v1 without contextRef and /ctx/v1 with
# contextRef to a ModelContextProtocol of that backend. wrk sends the yardstick's chat request
# (shared/bench/chat.lua) with an X-Conversation-Id cycling over 1,000 conversations
# (bench/context-chat.lua) to both routes, one after the other, at each concurrency, and the script
# reports req/s, p50, p99, non-2xx and the gateway's CPU µs per request (utime+stime from
# /proc/PID/stat, as bench/proxy.sh) for each route, and what the context route adds. For Redis
# it also counts the commands the gateway sent (INFO commandstats before/after) per request.
# redis-server and PostgreSQL are started here on free loopback ports in a private temporary
# folder and stopped at the end, like every other process this script starts.
#
# Usage: bench/context.sh [CTXGATE_BINARY]      (default: $CTXGATE_BIN, else build/ctxgate)
# env:   BENCH_DUR (s per run, default 8), BENCH_WARMUP (s, default 3), BENCH_CONNS (default
#        "1 32"), BENCH_BACKENDS (default "Memory File Redis PostgreSQL"), BENCH_CONVERSATIONS
#        (default 1000), BENCH_MAX_TURNS (maxTurnsPerConversation, default 20), BENCH_STRATEGY
#        (contextStrategy.type, default LastN), BENCH_REDIS_ARGS (extra redis-server arguments,
#        e.g. "--appendonly yes --appendfsync always"), BENCH_PG_OPTS (extra postgres -c
#        settings, e.g. "-c synchronous_commit=off"), CTXGATE_BENCH_ARGS (extra `ctxgate serve`
#        arguments)
set -u
# shellcheck source=bench/harness.sh
. "$(dirname "$0")/harness.sh"
bench_need wrk nginx curl ss
bench_check_shared

dur=${BENCH_DUR:-8}
warm=${BENCH_WARMUP:-3}
conns=${BENCH_CONNS:-"1 32"}
backends=${BENCH_BACKENDS:-"Memory File Redis PostgreSQL"}
convs=${BENCH_CONVERSATIONS:-1000}
max_turns=${BENCH_MAX_TURNS:-20}
strategy=${BENCH_STRATEGY:-LastN}
lua=$bench_dir/context-chat.lua

gw=${1:-}
if [ -n "$gw" ]; then
    [ -x "$gw" ] || { echo "bench: $gw is not an executable" >&2; exit 2; }
else
    gw=$(bench_find_gateway) || {
        echo "bench: no ctxgate binary: pass its path, set CTXGATE_BIN, or build build/ctxgate" >&2
        exit 2
    }
fi
case " $backends " in *" Redis "*) bench_need redis-server redis-cli ;; esac
pg_bin=""
case " $backends " in *" PostgreSQL "*)
    pg_bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)
    [ -x "$pg_bin/initdb" ] || { echo "bench: PostgreSQL not found: apt-get install postgresql" >&2; exit 2; }
    bench_need psql
    ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/ctxgate-bench-context.XXXXXX")
chmod 755 "$work" # the postgres user must reach its data folder inside
redis_pid=""
pg_data=""
as_pg=()
[ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)

ctx_cleanup() {
    bench_cleanup # ctxgate and nginx first: they are the stores' clients
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$redis_pid" 2>/dev/null
    fi
    [ -n "$pg_data" ] && "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w stop >/dev/null 2>&1
    rm -rf "$work"
}
trap ctx_cleanup EXIT
trap 'exit 130' INT TERM

free_port() { # a loopback TCP port nobody listens on
    local p
    for p in $(shuf -i 20000-29999 -n 100); do
        ss -ltnH "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
    done
    echo "bench: no free port found" >&2
    return 1
}

stop_gateway() { # stops $gw_pid and forgets it, so bench_cleanup never signals a reused PID
    local p keep=()
    kill "$gw_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$gw_pid" 2>/dev/null
    wait "$gw_pid" 2>/dev/null
    local rc=$?
    # 0 = drained and exited; 143 = SIGTERM's default action; anything else is worth a look
    if [ "$rc" != 0 ] && [ "$rc" != 143 ]; then
        cp "$pfx/ctxgate-$gw_port.err" "$pfx/context-$be.err" 2>/dev/null
        echo "  ($be: ctxgate exited with status $rc after SIGTERM; its log: $pfx/context-$be.err)"
    fi
    for p in "${bench_pids[@]}"; do [ "$p" = "$gw_pid" ] || keep+=("$p"); done
    bench_pids=("${keep[@]}")
}

start_redis() {
    redis_port=$(free_port) || exit 2
    mkdir -p "$work/redis"
    # shellcheck disable=SC2086 # BENCH_REDIS_ARGS is a word list on purpose
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$work/redis" --daemonize no ${BENCH_REDIS_ARGS:-} >"$work/redis/log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do
        redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    echo "bench: redis-server did not start:" >&2
    tail -5 "$work/redis/log" >&2
    exit 2
}

start_postgres() {
    pg_port=$(free_port) || exit 2
    mkdir -p "$work/pg"
    [ "$(id -u)" = 0 ] && chown postgres "$work/pg"
    if ! "${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg/data" -A trust -U postgres -E UTF8 \
        >"$work/pg/initdb.log" 2>&1; then
        echo "bench: initdb failed:" >&2
        tail -5 "$work/pg/initdb.log" >&2
        exit 2
    fi
    pg_data=$work/pg/data
    # shellcheck disable=SC2086 # BENCH_PG_OPTS is a word list on purpose
    if ! "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -l "$work/pg/server.log" -w -t 60 \
        -o "-k $work/pg -p $pg_port -c listen_addresses=127.0.0.1 ${BENCH_PG_OPTS:-}" start \
        >/dev/null 2>&1; then
        echo "bench: PostgreSQL did not start:" >&2
        tail -5 "$work/pg/server.log" >&2
        exit 2
    fi
}

# storage_yaml BACKEND: the storage block of the ModelContextProtocol under test
storage_yaml() {
    case $1 in
    Memory) echo "    type: Memory" ;;
    File) printf '    type: File\n    config: {path: "%s"}\n' "$work/file/context.db" ;;
    Redis) printf '    type: Redis\n    config: {url: "redis://127.0.0.1:%s/0"}\n' "$redis_port" ;;
    PostgreSQL)
        printf '    type: PostgreSQL\n    config: {dsn: "postgresql://postgres@127.0.0.1:%s/postgres"}\n' "$pg_port"
        ;;
    esac
}

# write_config BACKEND PORT FILE: the yardstick's gateway (ctxgate-bench.yaml: API key, metrics
# and JSON access log on) with a second route that has contextRef
write_config() {
    cat >"$3" <<EOF
apiVersion: v1
kind: Secret
metadata: {name: bench-keys}
stringData: {bench: sk-bench}
---
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: bench-context}
spec:
  storage:
$(storage_yaml "$1")
  contextLifecycle: {ttlSeconds: 3600, maxEntries: 100000, maxTurnsPerConversation: $max_turns}
  contextStrategy: {type: $strategy}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: bench}
spec:
  listener: {port: $2}
  modelTargets:
  - name: gpt-4o-mini
    type: OpenAICompatible
    config: {endpoint: "http://127.0.0.1:18080/v1", modelName: gpt-4o-mini}
  routes:
  - name: plain
    pathPrefix: /v1
    backends: [{target: gpt-4o-mini}]
  - name: context
    pathPrefix: /ctx/v1
    backends: [{target: gpt-4o-mini}]
    contextRef: {name: bench-context}
  authentication:
    type: APIKey
    apiKeys: [{name: bench, secretRef: {name: bench-keys, key: bench}, user: bench, app: bench, tenant: bench}]
  observability:
    loggingLevel: info
    accessLog: {format: JSON}
    metricsEndpoint: /metrics
EOF
}

to_us() { # wrk's "612.00us" / "1.23ms" / "1.01s" -> integer microseconds
    awk -v v="$1" 'BEGIN{ n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1000000 : (u == "m") ? 60000000 : 0
        if (v == "" || f == 0) print "-"; else printf "%.0f\n", n * f }'
}

redis_cmds() { # commands the gateway issued itself (not those run inside its Lua scripts)
    redis-cli -p "$redis_port" INFO commandstats | tr -d '\r' | awk -F'[:=,]' '
        $1 ~ /^cmdstat_(eval|evalsha|evalsha_ro|eval_ro|auth|select|ping|hello)$/ { s += $3 }
        END { print s + 0 }'
}

# run PATH CONNS PREFIX: one wrk run; prints req/s p50_us p99_us non2xx requests gw_cpu_us/req
run() {
    local path=$1 c=$2 prefix=$3 out c0 c1 rps p50 p99 errs reqs
    c0=$(bench_cpu_us "$gw_pid")
    out=$(BENCH_CHAT_LUA="$shared/chat.lua" BENCH_CONVERSATIONS="$convs" BENCH_CONV_PREFIX="$prefix" \
        wrk -t1 -c"$c" -d"${dur}s" --latency -s "$lua" "http://127.0.0.1:$gw_port$path/chat/completions" 2>&1)
    c1=$(bench_cpu_us "$gw_pid")
    rps=$(awk '/Requests\/sec/{printf "%.0f", $2}' <<<"$out")
    p50=$(to_us "$(awk '$1=="50%"{print $2}' <<<"$out")")
    p99=$(to_us "$(awk '$1=="99%"{print $2}' <<<"$out")")
    errs=$(awk '/Non-2xx/{print $NF}' <<<"$out")
    reqs=$(awk '/requests in/{print $1}' <<<"$out")
    echo "${rps:-0} $p50 $p99 ${errs:-0} ${reqs:-0} $(awk -v a="$c0" -v b="$c1" -v n="${reqs:-0}" \
        'BEGIN{if (n == 0) print "-"; else printf "%.1f", (b - a) / n}')"
}

warmup() { # PATH PREFIX: fills every conversation to maxTurnsPerConversation before measuring
    BENCH_CHAT_LUA="$shared/chat.lua" BENCH_CONVERSATIONS="$convs" BENCH_CONV_PREFIX="$2" \
        wrk -t1 -c32 -d"${warm}s" -s "$lua" "http://127.0.0.1:$gw_port$1/chat/completions" >/dev/null 2>&1
}

bench_start_mock
case " $backends " in *" Redis "*) start_redis ;; esac
case " $backends " in *" PostgreSQL "*) start_postgres ;; esac
mkdir -p "$work/file"

echo "ctxgate: $gw ($("$gw" version 2>/dev/null)); $(nproc) CPUs; wrk -t1 ${dur}s per run;" \
    "$convs conversations, maxTurnsPerConversation $max_turns, contextStrategy $strategy"
printf "%-10s %5s | %8s %7s %7s %8s | %8s %7s %7s %8s | %7s %7s %8s | %6s %9s\n" backend conns \
    req/s p50 p99 cpu/req "ctx req/s" p50 p99 cpu/req +p50 +p99 +cpu/req non2xx redis/req
for be in $backends; do
    gw_port=$(free_port) || exit 2
    conf=$work/gateway-$be.yaml
    write_config "$be" "$gw_port" "$conf"
    if ! "$gw" validate "$conf" >"$work/validate-$be.log" 2>&1; then
        echo "bench: the generated configuration for $be is invalid:" >&2
        cat "$work/validate-$be.log" >&2
        exit 2
    fi
    bench_start_gateway "$gw" "$conf" "$gw_port" || exit 2
    tag=$be-$$-
    warmup /v1 "$tag"
    warmup /ctx/v1 "$tag"
    for c in $conns; do
        read -r a_rps a_p50 a_p99 a_err _ a_cpu <<<"$(run /v1 "$c" "$tag")"
        [ "$be" = Redis ] && r0=$(redis_cmds)
        read -r b_rps b_p50 b_p99 b_err b_reqs b_cpu <<<"$(run /ctx/v1 "$c" "$tag")"
        rt="-"
        if [ "$be" = Redis ]; then
            sleep 0.2 # commits of the last answers wrk received
            r1=$(redis_cmds)
            rt=$(awk -v a="$r0" -v b="$r1" -v n="$b_reqs" 'BEGIN{if (n > 0) printf "%.2f", (b - a) / n; else print "-"}')
        fi
        printf "%-10s %5s | %8s %7s %7s %8s | %8s %7s %7s %8s | %7s %7s %8s | %6s %9s\n" \
            "$be" "$c" "$a_rps" "$a_p50" "$a_p99" "$a_cpu" "$b_rps" "$b_p50" "$b_p99" "$b_cpu" \
            "$(awk -v a="$a_p50" -v b="$b_p50" 'BEGIN{print (a == "-" || b == "-") ? "-" : b - a}')" \
            "$(awk -v a="$a_p99" -v b="$b_p99" 'BEGIN{print (a == "-" || b == "-") ? "-" : b - a}')" \
            "$(awk -v a="$a_cpu" -v b="$b_cpu" 'BEGIN{if (a == "-" || b == "-") print "-"; else printf "%.1f", b - a}')" \
            "$((a_err + b_err))" "$rt"
    done
    problems() { grep -E ' (error|warn) ' "$pfx/ctxgate-$gw_port.err" | grep -v 'not yet enforced'; }
    if [ -n "$(problems)" ]; then
        echo "  ($be: the gateway logged problems; first lines:)"
        problems | head -3 | sed 's/^/  /'
    fi
    stop_gateway
    rm -f "$pfx/ctxgate-$gw_port.log" "$pfx/ctxgate-$gw_port.err"
done
echo "(latencies in µs from wrk; cpu/req = the gateway's utime+stime per completed request, µs;"
echo " +… = context route minus plain route in the same run; redis/req = commands the gateway sent"
echo " to Redis per request: EVAL/AUTH/SELECT/PING, not the commands inside the scripts)"
