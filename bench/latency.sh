#!/usr/bin/env bash
# latency.sh — latency added by the proxy at a fixed, moderate load (default 1,000 req/s), where
# nothing should queue: the yardstick's chat request (chat.lua's body) sent open-loop by
# bench/pace.c at exactly 1/rate intervals, straight to the nginx mock, through nginx proxy_pass
# and through ctxgate (ctxgate-bench.yaml). h2load --rps was tried first: it sends each client's
# quota in bursts, so its percentiles measure queueing inside the bursts (see docs/benchmarks.md).
# Prints p50/p99/p99.9 per path, measured from each request's scheduled time (no coordinated
# omission) and from its actual send, and the difference to direct.
# Usage: bench/latency.sh     env: BENCH_RPS (default 1000), BENCH_LAT_DUR (s, default 15),
#        BENCH_CLIENTS (keep-alive connections in the pool, default 16), CTXGATE_BENCH_ARGS
set -u
# shellcheck source=bench/harness.sh
. "$(dirname "$0")/harness.sh"
bench_need nginx curl cc
bench_check_shared
rate=${BENCH_RPS:-1000}
dur=${BENCH_LAT_DUR:-15}
clients=${BENCH_CLIENTS:-16}

pace=$pfx/pace
if [ ! -x "$pace" ] || [ "$bench_dir/pace.c" -nt "$pace" ]; then
    cc -O2 -std=c17 -D_GNU_SOURCE -o "$pace" "$bench_dir/pace.c" -luv -lhttp_parser || {
        echo "bench: building pace failed (needs libuv1-dev and libhttp-parser-dev)" >&2
        exit 2
    }
fi
body=$pfx/chat-body.json
sed -n 's/^wrk\.body = \[\[\(.*\)\]\]$/\1/p' "$shared/chat.lua" >"$body"
[ -s "$body" ] || { echo "bench: could not read the request body from chat.lua" >&2; exit 2; }

bench_start_mock
gw=$(bench_find_gateway) || gw=""
if [ -n "$gw" ]; then
    bench_start_gateway "$gw" "$shared/ctxgate-bench.yaml" 18090 || gw=""
else
    echo "bench: no ctxgate binary under $repo (build/ctxgate): measuring direct and nginx only" >&2
fi

# paced NAME PORT: prints NAME sent 2xx achieved_rps p50 p99 p99.9 (from schedule) p50 p99 (from send)
paced() {
    local name=$1 port=$2
    local args=(-p "$port" -c "$clients" -b "$body" -H 'Content-Type: application/json'
        -H 'Authorization: Bearer sk-bench')
    # warm-up (connections, caches, the gateway's first requests): 1 s, not recorded
    "$pace" "${args[@]}" -r "$rate" -d 1 -o /dev/null /v1/chat/completions >/dev/null || return 1
    echo "$name $("$pace" "${args[@]}" -r "$rate" -d "$dur" -o "$pfx/latency-$name.log" /v1/chat/completions)"
}

echo "fixed load: $rate req/s for ${dur}s, open loop, pool of $clients keep-alive connections (bench/pace.c)"
printf "%-8s %6s %6s %7s | %7s %7s %8s %7s %7s | %7s %7s\n" path sent 2xx req/s \
    p50 p99 p99.9 +p50 +p99 send50 send99
rows=("$(paced direct 18080)" "$(paced nginx 18081)")
[ -n "$gw" ] && rows+=("$(paced ctxgate 18090)")
d50=$(printf '%s\n' "${rows[@]}" | awk '$1=="direct"{print $5}')
d99=$(printf '%s\n' "${rows[@]}" | awk '$1=="direct"{print $6}')
for r in "${rows[@]}"; do
    set -- $r
    [ $# -eq 9 ] || { echo "$1: run failed"; continue; }
    printf "%-8s %6s %6s %7s | %7s %7s %8s %7s %7s | %7s %7s\n" "$1" "$2" "$3" "$4" "$5" "$6" "$7" \
        $(($5 - d50)) $(($6 - d99)) "$8" "$9"
done
echo "(microseconds; p50/p99/p99.9 from each request's scheduled send time, +p50/+p99 minus direct's;"
echo " send50/send99 from the actual send; per-request logs in $pfx/latency-*.log)"
