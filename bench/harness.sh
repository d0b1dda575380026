# shellcheck shell=bash
# harness.sh — sourced by the bench/ scripts: finds the checkout and the shared yardstick
# (upstream.nginx.conf, chat.lua, ctxgate-bench.yaml), starts/stops the nginx mock upstream and a
# ctxgate process the script owns (so it can read /proc/PID), and small helpers for numbers.
# Every process started here is stopped by bench_cleanup (installed as the EXIT trap).

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench_dir/.." && pwd)
shared=${CTXGATE_SHARED_BENCH:-$(dirname "$repo")/shared/bench}
pfx=${TMPDIR:-/tmp}/ctxgate-bench-e
mkdir -p "$pfx/logs"
bench_pids=()
bench_nginx_confs=()

bench_need() { # tool... : exit 2 with the Debian package to install when a tool is missing
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 && continue
        case $t in
        h2load) echo "bench: h2load not found: apt-get install nghttp2-client" >&2 ;;
        nginx) echo "bench: nginx not found: apt-get install nginx-light" >&2 ;;
        *) echo "bench: $t not found: apt-get install $t" >&2 ;;
        esac
        exit 2
    done
}

bench_check_shared() {
    local f
    for f in upstream.nginx.conf chat.lua ctxgate-bench.yaml run.sh; do
        [ -f "$shared/$f" ] || {
            echo "bench: $shared/$f missing; set CTXGATE_SHARED_BENCH to the yardstick folder" >&2
            exit 2
        }
    done
}

bench_cleanup() {
    local p c
    for p in "${bench_pids[@]:-}"; do
        [ -n "$p" ] || continue
        kill "$p" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
    done
    for c in "${bench_nginx_confs[@]:-}"; do
        [ -n "$c" ] && nginx -p "$pfx" -c "$c" -s quit 2>/dev/null
    done
}
trap bench_cleanup EXIT

bench_wait_http() { # url [method]: wait up to 10 s for any HTTP answer
    for _ in $(seq 100); do
        curl -s -o /dev/null -X "${2:-GET}" "$1" && return 0
        sleep 0.1
    done
    echo "bench: nothing answers at $1" >&2
    return 1
}

# The yardstick's mock upstream (:18080) and nginx proxy_pass floor (:18081). Reuses a running one.
bench_start_mock() {
    if curl -s -o /dev/null -XPOST 127.0.0.1:18080/; then return 0; fi
    nginx -p "$pfx" -c "$shared/upstream.nginx.conf" || { echo "bench: nginx failed" >&2; exit 2; }
    bench_nginx_confs+=("$shared/upstream.nginx.conf")
    bench_wait_http 127.0.0.1:18080/ POST
}

# The PID of the nginx worker serving :18080/:18081 (for its CPU time), empty if unknown; found by
# the listening socket, so it works for an nginx this script did not start too.
bench_nginx_worker_pid() {
    local p
    for p in $(ss -ltnp 'sport = :18080' 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
        tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q 'worker process' && { echo "$p"; return 0; }
    done
    return 0
}

# The gateway binary: $CTXGATE_BIN when set, else the places the yardstick looks.
bench_find_gateway() {
    local b
    if [ -n "${CTXGATE_BIN:-}" ]; then
        [ -x "$CTXGATE_BIN" ] && { echo "$CTXGATE_BIN"; return 0; }
        echo "bench: CTXGATE_BIN=$CTXGATE_BIN is not an executable" >&2
        return 1
    fi
    for b in "$repo/build/ctxgate" "$repo/ctxgate" "$repo/build/src/ctxgate" "$repo/bin/ctxgate"; do
        [ -x "$b" ] && { echo "$b"; return 0; }
    done
    return 1
}

# Builds build/ctxgate (Release) unless BENCH_NO_BUILD is set; prints nothing on success.
bench_build_gateway() {
    [ -n "${BENCH_NO_BUILD:-}" ] && return 0
    cmake -S "$repo" -B "$repo/build" -DCMAKE_BUILD_TYPE=Release >"$pfx/build.log" 2>&1 &&
        cmake --build "$repo/build" --target ctxgate -j"$(nproc)" >>"$pfx/build.log" 2>&1 || {
        echo "bench: building ctxgate failed (see $pfx/build.log); measuring without it" >&2
        return 1
    }
}

# bench_start_gateway CONFIG PORT: starts ctxgate, sets gw_pid; access log to $pfx/ctxgate-PORT.log
bench_start_gateway() {
    local gw=$1 conf=$2 port=$3
    if curl -s -o /dev/null "127.0.0.1:$port/"; then
        echo "bench: port $port is already in use (another benchmark?): not measuring ctxgate" >&2
        return 1
    fi
    # shellcheck disable=SC2086 # CTXGATE_BENCH_ARGS is a word list on purpose
    "$gw" serve -f "$conf" ${CTXGATE_BENCH_ARGS:-} >"$pfx/ctxgate-$port.log" 2>"$pfx/ctxgate-$port.err" &
    gw_pid=$!
    bench_pids+=("$gw_pid")
    if ! bench_wait_http "127.0.0.1:$port/healthz"; then
        echo "bench: ctxgate did not start; its log:" >&2
        tail -20 "$pfx/ctxgate-$port.err" >&2
        return 1
    fi
}

# CPU time of a process in microseconds (utime + stime from /proc/PID/stat).
bench_cpu_us() {
    local tck
    tck=$(getconf CLK_TCK)
    # the command name (field 2) may hold spaces: cut everything up to the last ')'
    sed 's/.*) //' "/proc/$1/stat" | awk -v t="$tck" '{printf "%.0f\n", ($12 + $13) * 1000000 / t}'
}

bench_rss_kib() { # VmRSS of a process in KiB
    awk '/^VmRSS:/{print $2}' "/proc/$1/status"
}

bench_hwm_kib() { # peak RSS (VmHWM) in KiB
    awk '/^VmHWM:/{print $2}' "/proc/$1/status"
}

# Percentiles of a column of numbers on stdin: prints "p50 p99 p999 n".
bench_percentiles() {
    sort -n | awk '{v[NR] = $1} END {
        if (NR == 0) { print "- - - 0"; exit }
        i50 = int(NR * 0.50 + 0.5); if (i50 < 1) i50 = 1
        i99 = int(NR * 0.99 + 0.5); if (i99 < 1) i99 = 1
        i999 = int(NR * 0.999 + 0.5); if (i999 < 1) i999 = 1
        print v[i50], v[i99], v[i999], NR }'
}
