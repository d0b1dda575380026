#!/usr/bin/env bash
# soak.sh — does the gateway's memory stay flat under hours of mixed traffic? A benchmark script,
# not a test. It starts, on loopback:
#   * the yardstick's nginx mock upstream (shared/bench/upstream.nginx.conf, moved to the soak's
#     own ports so that it never meets another benchmark's nginx), bench/sse-mock.cjs (streamed
#     answers, 10 chunks 10 ms apart), and the 500-answering upstream of bench/soak-client.mjs;
#   * one ctxgate (release build by default) with a plain route /v1 and a context route /ctx/v1
#     (ModelContextProtocol on the Memory store, 500 conversations at most, 20 turns each, so the
#     store reaches its steady size during the warm-up), access log on (to /dev/null);
#   * the load, for SOAK_SECONDS: wrk with bench/soak.lua (plain, streamed through the proxy,
#     streamed by the Mock target, unknown model 404, bad JSON 400, upstream 500 → 502) and
#     node bench/soak-client.mjs (context turns streamed and not over 1,000 conversation ids,
#     and streams aborted by the client after their first chunk, on both routes).
# Every SOAK_INTERVAL seconds it samples the gateway's RSS (/proc/PID/status VmRSS) and prints a
# table (time, RSS, requests served so far from /metrics, requests in flight, conversations held).
# At the end it reports the growth from the first sample at or after SOAK_WARMUP seconds to the
# last sample, and exits 1 when it is >= SOAK_MAX_GROWTH_KIB (or when the gateway died, a client
# saw an unexpected answer, or SIGTERM did not give exit status 0); 0 otherwise.
#
# Usage: bench/soak.sh [CTXGATE_BINARY]        (default: $CTXGATE_BIN, else build/ctxgate)
#        nice -n 10 bench/soak.sh               (on a shared machine)
#        SOAK_SECONDS=3600 bench/soak.sh        (the one-hour soak)
# env:   SOAK_SECONDS (default 600), SOAK_INTERVAL (10), SOAK_WARMUP (60),
#        SOAK_MAX_GROWTH_KIB (2048), SOAK_CONNS (wrk connections, default 8), SOAK_CLIENTS (node
#        client loops, default 4), SOAK_PORT (gateway, default 18097; the SSE mock uses
#        SOAK_PORT+1, the 500 upstream SOAK_PORT+2, the nginx mock SOAK_PORT+3 and its unused
#        proxy_pass server SOAK_PORT+4), SOAK_WORKERS (default 2),
#        CTXGATE_BENCH_ARGS (extra `ctxgate serve` arguments), CTXGATE_SHARED_BENCH (the
#        yardstick folder; default: shared/bench beside the checkout)
# With the ASan build (bench/soak.sh build-asan/ctxgate) the RSS figures mean nothing (ASan's
# quarantine): set SOAK_MAX_GROWTH_KIB high and read it as a crash/leak hunt under mixed traffic
# (any sanitizer report in the gateway's log makes the script fail).
set -u
# shellcheck source=bench/harness.sh
. "$(dirname "$0")/harness.sh"
bench_need wrk nginx curl node
bench_check_shared

seconds=${SOAK_SECONDS:-600}
interval=${SOAK_INTERVAL:-10}
warmup=${SOAK_WARMUP:-60}
max_growth=${SOAK_MAX_GROWTH_KIB:-2048}
conns=${SOAK_CONNS:-8}
clients=${SOAK_CLIENTS:-4}
port=${SOAK_PORT:-18097}
sse_port=$((port + 1))
err_port=$((port + 2))
mock_port=$((port + 3))
workers=${SOAK_WORKERS:-2}

gw=${1:-}
if [ -n "$gw" ]; then
    [ -x "$gw" ] || { echo "soak: $gw is not an executable" >&2; exit 2; }
else
    gw=$(bench_find_gateway) || {
        echo "soak: no ctxgate binary: pass its path, set CTXGATE_BIN, or build build/ctxgate" >&2
        exit 2
    }
fi
for p in "$port" "$sse_port" "$err_port" "$mock_port" $((port + 4)); do
    if curl -s -o /dev/null "127.0.0.1:$p/"; then
        echo "soak: port $p is in use (another soak?); set SOAK_PORT" >&2
        exit 2
    fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/ctxgate-soak.XXXXXX")
cat >"$work/gateway.yaml" <<EOF
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: soak-ctx}
spec:
  storage: {type: Memory}
  contextStrategy: {type: LastN, lastN: 10}
  contextLifecycle: {maxEntries: 500, maxTurnsPerConversation: 20}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: soak}
spec:
  listener: {port: $port}
  modelTargets:
  - {name: plain, type: OpenAICompatible, config: {endpoint: "http://127.0.0.1:$mock_port/v1", modelName: gpt-4o-mini}}
  - {name: sse, type: OpenAICompatible, config: {endpoint: "http://127.0.0.1:$sse_port/v1", modelName: gpt-4o-mini}}
  - {name: mock, type: Mock, config: {mock: {text: "a canned answer from the Mock target", chunks: 4}}}
  - {name: broken, type: OpenAICompatible, config: {endpoint: "http://127.0.0.1:$err_port/v1", modelName: gpt-4o-mini}}
  routes:
  - name: main
    pathPrefix: /v1
    backends: [{target: plain}, {target: sse}, {target: mock}, {target: broken}]
  - name: ctx
    pathPrefix: /ctx/v1
    backends: [{target: plain}, {target: sse}]
    contextRef: {name: soak-ctx}
  authentication: {type: None}
  observability:
    accessLog: {format: JSON}
    metricsEndpoint: /metrics
EOF

cleanup_soak() {
    [ -n "${wrk_pid:-}" ] && kill "$wrk_pid" 2>/dev/null
    [ -n "${client_pid:-}" ] && kill "$client_pid" 2>/dev/null
    bench_cleanup
    [ -f "$work/soak-nginx.pid" ] && nginx -p "$work" -c "$work/upstream.nginx.conf" -s quit 2>/dev/null
    sleep 0.2
    rm -rf "$work"
}
trap cleanup_soak EXIT

mkdir -p "$work/logs"
sed -e "s/127\.0\.0\.1:18080/127.0.0.1:$mock_port/g" -e "s/127\.0\.0\.1:18081/127.0.0.1:$((port + 4))/g" \
    -e 's/^pid .*/pid soak-nginx.pid;/' "$shared/upstream.nginx.conf" >"$work/upstream.nginx.conf"
nginx -p "$work" -c "$work/upstream.nginx.conf" 2>"$work/nginx.err" || {
    echo "soak: nginx failed:" >&2
    cat "$work/nginx.err" >&2
    exit 2
}
bench_wait_http "127.0.0.1:$mock_port/" POST || exit 2
node "$bench_dir/sse-mock.cjs" "$sse_port" 10 10 2>"$work/sse-mock.err" &
bench_pids+=($!)
bench_wait_http "127.0.0.1:$sse_port/" POST || exit 2

# shellcheck disable=SC2086 # CTXGATE_BENCH_ARGS is a word list on purpose
"$gw" serve -f "$work" --workers "$workers" ${CTXGATE_BENCH_ARGS:-} >/dev/null 2>"$work/ctxgate.err" &
gw_pid=$!
bench_pids+=("$gw_pid")
if ! bench_wait_http "127.0.0.1:$port/healthz"; then
    echo "soak: ctxgate did not start; its log:" >&2
    tail -20 "$work/ctxgate.err" >&2
    exit 2
fi

metric() { # NAME: the sum of a metric's samples on /metrics (0 when absent)
    curl -s --max-time 5 "127.0.0.1:$port/metrics" |
        awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%.0f\n", s }'
}

echo "soak: $gw (pid $gw_pid, $workers workers) on :$port for ${seconds}s; wrk $conns connections + $clients node clients"
node "$bench_dir/soak-client.mjs" "http://127.0.0.1:$port" "$err_port" "$seconds" "$clients" >"$work/client.out" 2>"$work/client.err" &
client_pid=$!
bench_wait_http "127.0.0.1:$err_port/" POST || exit 2
wrk -t1 -c"$conns" -d"${seconds}s" --timeout 30s -s "$bench_dir/soak.lua" "http://127.0.0.1:$port/v1/chat/completions" >"$work/wrk.out" 2>&1 &
wrk_pid=$!

start=$(date +%s)
printf '%8s %10s %12s %9s %14s\n' t_s rss_kib requests in_flight conversations
samples=()
while :; do
    now=$(($(date +%s) - start))
    if ! kill -0 "$gw_pid" 2>/dev/null; then
        echo "soak: the gateway died at ${now}s; its log:" >&2
        tail -40 "$work/ctxgate.err" >&2
        exit 1
    fi
    rss=$(bench_rss_kib "$gw_pid")
    printf '%8d %10d %12s %9s %14s\n' "$now" "$rss" "$(metric ctxgate_requests_total)" \
        "$(metric ctxgate_requests_in_flight)" "$(metric ctxgate_context_active_conversations)"
    samples+=("$now:$rss")
    [ "$now" -ge "$seconds" ] && break
    next=$(((now / interval + 1) * interval))
    [ "$next" -gt "$seconds" ] && next=$seconds
    sleep $((next - now))
done

status=0
wait "$wrk_pid"
wrk_pid=""
kill "$client_pid" 2>/dev/null
wait "$client_pid" || { echo "soak: the node client saw unexpected answers" >&2; status=1; }
client_pid=""
echo
echo "== wrk (plain, streamed, Mock, 404, 400, 502 mix)"
grep -E 'requests in|Requests/sec|Non-2xx|Socket errors' "$work/wrk.out"
echo "== node client (context turns, aborted streams)"
cat "$work/client.out"

base=""
for s in "${samples[@]}"; do
    t=${s%%:*}
    if [ "$t" -ge "$warmup" ]; then base=$s; break; fi
done
last=${samples[${#samples[@]}-1]}
[ -n "$base" ] || base=$last
growth=$((${last#*:} - ${base#*:}))
echo "== RSS: ${base#*:} KiB at ${base%%:*}s (after the ${warmup}s warm-up) -> ${last#*:} KiB at ${last%%:*}s:" \
    "growth $growth KiB (limit $max_growth KiB); peak $(bench_hwm_kib "$gw_pid") KiB"
[ "$growth" -ge "$max_growth" ] && { echo "soak: RSS grew by $growth KiB >= $max_growth KiB" >&2; status=1; }

kill -TERM "$gw_pid"
for _ in $(seq 300); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.1; done
if wait "$gw_pid"; then echo "== SIGTERM: exit 0"; else
    echo "soak: the gateway's exit status after SIGTERM was $?" >&2
    status=1
fi
if grep -qE 'Sanitizer|runtime error' "$work/ctxgate.err"; then
    echo "soak: sanitizer report in the gateway's log:" >&2
    grep -E -A20 'Sanitizer|runtime error' "$work/ctxgate.err" | head -60 >&2
    status=1
fi
exit $status
