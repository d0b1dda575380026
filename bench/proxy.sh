#!/usr/bin/env bash
# proxy.sh — the yardstick's proxy benchmark (same nginx mock, chat.lua and ctxgate-bench.yaml as
# shared/bench/run.sh) with ctxgate started by this script, so it can also report what the
# yardstick cannot: the gateway's CPU time per request (utime+stime from /proc/PID/stat around
# each wrk run, divided by the requests wrk completed), its idle RSS after start and its peak RSS.
# The nginx worker's CPU per request is measured the same way: on the nginx row it serves both the
# proxy and the mock, so the proxy's own share is (nginx row − direct row).
# Usage: bench/proxy.sh          env: BENCH_DUR (s, default 8), BENCH_CONNS (default "32 256"),
#        CTXGATE_BENCH_ARGS (extra `ctxgate serve` arguments, e.g. "--workers 2")
set -u
# shellcheck source=bench/harness.sh
. "$(dirname "$0")/harness.sh"
bench_need wrk nginx curl
bench_check_shared
dur=${BENCH_DUR:-8}
conns=${BENCH_CONNS:-"32 256"}

bench_start_mock
ngx=$(bench_nginx_worker_pid)
gw=$(bench_find_gateway) || gw=""
gw_pid=""
if [ -n "$gw" ]; then
    bench_start_gateway "$gw" "$shared/ctxgate-bench.yaml" 18090 || gw=""
fi
if [ -n "$gw" ]; then
    sleep 1 # let start-up allocations settle before reading the idle footprint
    idle_rss=$(bench_rss_kib "$gw_pid")
else
    echo "bench: no ctxgate binary under $repo (build/ctxgate): measuring direct and nginx only" >&2
fi

# measure NAME PORT CONNS: one wrk run; prints NAME CONNS req/s p50 p99 non2xx requests
#   gw_cpu_us ngx_cpu_us (CPU µs per request, "-" when the process is not known)
measure() {
    local name=$1 port=$2 c=$3 out g0 g1 n0 n1 rps p50 p99 errs reqs gcpu ncpu
    g0=$([ -n "$gw_pid" ] && bench_cpu_us "$gw_pid")
    n0=$([ -n "$ngx" ] && bench_cpu_us "$ngx")
    out=$(wrk -t1 -c"$c" -d"${dur}s" --latency -s "$shared/chat.lua" \
        "http://127.0.0.1:$port/v1/chat/completions" 2>&1)
    g1=$([ -n "$gw_pid" ] && bench_cpu_us "$gw_pid")
    n1=$([ -n "$ngx" ] && bench_cpu_us "$ngx")
    rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
    p50=$(awk '$1=="50%"{print $2}' <<<"$out")
    p99=$(awk '$1=="99%"{print $2}' <<<"$out")
    errs=$(awk '/Non-2xx/{print $NF}' <<<"$out")
    reqs=$(awk '/requests in/{print $1}' <<<"$out")
    gcpu=$(awk -v a="${g0:-}" -v b="${g1:-}" -v n="${reqs:-0}" \
        'BEGIN{if (a == "" || n == 0) print "-"; else printf "%.1f", (b - a) / n}')
    ncpu=$(awk -v a="${n0:-}" -v b="${n1:-}" -v n="${reqs:-0}" \
        'BEGIN{if (a == "" || n == 0) print "-"; else printf "%.1f", (b - a) / n}')
    echo "$name $c ${rps:-0} ${p50:--} ${p99:--} ${errs:-0} ${reqs:-0} $gcpu $ncpu"
}

printf "%-8s %5s %10s %9s %9s %6s %7s %12s %12s\n" path conns req/s p50 p99 non2xx ratio \
    "gw_cpu_us/r" "ngx_cpu_us/r"
for c in $conns; do
    rows=("$(measure direct 18080 "$c")" "$(measure nginx 18081 "$c")")
    [ -n "$gw" ] && rows+=("$(measure ctxgate 18090 "$c")")
    ng=$(printf '%s\n' "${rows[@]}" | awk '$1=="nginx"{print $3}')
    for r in "${rows[@]}"; do
        set -- $r
        gcol=$8
        [ "$1" != ctxgate ] && gcol="-"
        printf "%-8s %5s %10s %9s %9s %6s %7.3f %12s %12s\n" "$1" "$2" "$3" "$4" "$5" "$6" \
            "$(awk -v a="$3" -v b="$ng" 'BEGIN{print (b > 0) ? a / b : 0}')" "$gcol" "$9"
    done
    d=$(printf '%s\n' "${rows[@]}" | awk '$1=="direct"{print $9}')
    n=$(printf '%s\n' "${rows[@]}" | awk '$1=="nginx"{print $9}')
    awk -v d="$d" -v n="$n" -v c="$c" 'BEGIN{if (d != "-" && n != "-")
        printf "nginx proxy_pass own CPU per request at %s conns: %.1f us (nginx row - direct row)\n", c, n - d}'
done
if [ -n "$gw" ]; then
    echo "ctxgate idle RSS after start: ${idle_rss} KiB; peak RSS (VmHWM) after the runs: $(bench_hwm_kib "$gw_pid") KiB"
    echo "ctxgate: $gw $(${gw} version 2>/dev/null)"
fi
