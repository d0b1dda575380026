#!/usr/bin/env bash
# stream.sh — how long a streamed chunk waits in the proxy. bench/sse-mock.cjs (node, :18082) sends
# SSE chat.completion.chunk events at a fixed interval, each stamped with CLOCK_MONOTONIC at its
# write; bench/sse-client.cjs reads the streams and records, per chunk, stamp → arrival. Run
# directly, through nginx proxy_pass with proxy_buffering off (bench/stream.nginx.conf, :18083,
# the floor) and through ctxgate (bench/ctxgate-stream.yaml, :18091); the added delay per chunk is
# the path's percentile minus direct's. The translated cases: o2a is an OpenAI client in front of
# an Anthropic target (the mock's Messages stream, each event translated to a chat.completion.chunk),
# a2o an Anthropic client (/v1/messages) in front of the OpenAI-family target, a2a an Anthropic
# client in front of the Anthropic target (the same family: events relayed as they came, still
# read for usage); each is compared with the direct stream in the upstream's own family (direct-a
# for o2a and a2a, direct for a2o).
# Usage: bench/stream.sh   env: BENCH_STREAMS (default 200), BENCH_STREAM_CONC (concurrent
#        streams, default 16), BENCH_CHUNKS (per stream, default 20), BENCH_CHUNK_MS (default 20)
set -u
# shellcheck source=bench/harness.sh
. "$(dirname "$0")/harness.sh"
bench_need node nginx curl
streams=${BENCH_STREAMS:-200}
conc=${BENCH_STREAM_CONC:-16}
chunks=${BENCH_CHUNKS:-20}
every=${BENCH_CHUNK_MS:-20}

node "$bench_dir/sse-mock.cjs" 18082 "$chunks" "$every" 2>"$pfx/sse-mock.err" &
bench_pids+=($!)
bench_wait_http 127.0.0.1:18082/ || exit 2
nginx -p "$pfx" -c "$bench_dir/stream.nginx.conf" || { echo "bench: nginx failed" >&2; exit 2; }
bench_nginx_confs+=("$bench_dir/stream.nginx.conf")
bench_wait_http 127.0.0.1:18083/ || exit 2
gw=$(bench_find_gateway) || gw=""
if [ -n "$gw" ]; then
    bench_start_gateway "$gw" "$bench_dir/ctxgate-stream.yaml" 18091 || gw=""
else
    echo "bench: no ctxgate binary under $repo (build/ctxgate): measuring direct and nginx only" >&2
fi

# run NAME PORT [FAMILY MODEL]: prints NAME chunks p50 p99 p99.9 (µs from the mock's write to the
# client's read)
run() {
    local name=$1 port=$2 fam=${3:-openai} model=${4:-gpt-4o-mini} out=$pfx/stream-$1.delays
    node "$bench_dir/sse-client.cjs" "$port" "$conc" "$conc" /dev/null sk-bench "$fam" "$model" \
        >/dev/null 2>&1 # warm-up
    if ! node "$bench_dir/sse-client.cjs" "$port" "$streams" "$conc" "$out" sk-bench "$fam" "$model"; then
        echo "$name failed"
        return
    fi
    read -r p50 p99 p999 n < <(bench_percentiles <"$out")
    echo "$name $n $p50 $p99 $p999"
}

echo "streams: $streams ($conc at a time), $chunks chunks each, one every ${every} ms"
printf "%-8s %7s %9s %9s %9s %9s %9s\n" path chunks p50_us p99_us p99.9_us +p50_us +p99_us
rows=("$(run direct 18082)" "$(run nginx 18083)")
[ -n "$gw" ] && rows+=("$(run ctxgate 18091)")
rows+=("$(run direct-a 18082 anthropic claude-sonnet-4-5)")
[ -n "$gw" ] && rows+=("$(run o2a 18091 openai claude-stream)" "$(run a2o 18091 anthropic gpt-4o-mini)"
    "$(run a2a 18091 anthropic claude-stream)")
col() { printf '%s\n' "${rows[@]}" | awk -v n="$1" -v c="$2" '$1==n{print $c}'; }
for r in "${rows[@]}"; do
    set -- $r
    [ $# -eq 5 ] || { echo "$r"; continue; }
    base=direct
    case $1 in o2a | a2a | direct-a) base=direct-a ;; esac
    printf "%-8s %7s %9s %9s %9s %9s %9s\n" "$@" \
        "$(awk -v a="$3" -v b="$(col $base 3)" 'BEGIN{printf "%.1f", a - b}')" \
        "$(awk -v a="$4" -v b="$(col $base 4)" 'BEGIN{printf "%.1f", a - b}')"
done
echo "(per-chunk delays in $pfx/stream-*.delays)"
