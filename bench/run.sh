#!/usr/bin/env bash
# run.sh — the whole proxy benchmark: builds build/ctxgate (Release), runs the shared yardstick
# (shared/bench/run.sh: req/s, p50, p99 and ratio to nginx proxy_pass for direct, nginx, ctxgate
# and Portkey when installed, at 32 and 256 connections), then bench/proxy.sh for what the
# yardstick does not show: ctxgate's CPU µs per request and its idle/peak RSS.
# Usage: bench/run.sh     env: BENCH_NO_BUILD=1 (use the existing binary), BENCH_DUR, BENCH_CONNS,
#        CTXGATE_SHARED_BENCH (yardstick folder; default: shared/bench beside the checkout)
set -u
# shellcheck source=bench/harness.sh
. "$(dirname "$0")/harness.sh"
bench_need wrk nginx curl cmake
bench_check_shared

bench_build_gateway
echo "== yardstick: $shared/run.sh $repo"
bash "$shared/run.sh" "$repo"
echo
echo "== ctxgate CPU and memory: bench/proxy.sh"
bash "$bench_dir/proxy.sh"
