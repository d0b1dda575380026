#!/usr/bin/env bash
# fuzz.sh — builds the libFuzzer targets of tests/fuzz/ in build-fuzz/ (clang, CTXGATE_FUZZ=ON:
# ASan + UBSan + coverage) and runs each one over its committed seeds (tests/fuzz/corpus/<name>/)
# and regressions (tests/fuzz/regressions/<name>/), then for SECONDS of fresh mutation. New inputs
# go to a temporary copy of the corpus, so the committed one does not grow. Prints one line per
# target, `fuzz <name>: N execs, K findings`, and a summary; exits non-zero when a target found
# something (crash, leak, UB, timeout, out of memory), with the reproducer under
# build-fuzz/findings/<name>/ and the log next to it.
#
# Usage: scripts/fuzz.sh [SECONDS] [NAME...]     (SECONDS per target; 0 = the corpus only)
# Environment: FUZZ_SECONDS (default 600, when SECONDS is not given), FUZZ_JOBS (targets run at
# once, default 1), JOBS (build jobs, default nproc), CTXGATE_FUZZ_BUILD_DIR (default build-fuzz),
# FUZZ_RSS_MB (default 2048), FUZZ_NICE (niceness of the fuzzers, default 0),
# FUZZ_KEEP_CORPUS=1 (keep each target's grown corpus, printed at the end).
#
# Reproduce a finding: build-fuzz/tests/fuzz/fuzz_<name> build-fuzz/findings/<name>/crash-...
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT="$PWD"
SECS="${1:-${FUZZ_SECONDS:-600}}"
[ "$#" -gt 0 ] && shift
BUILD_DIR="${CTXGATE_FUZZ_BUILD_DIR:-build-fuzz}"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
FUZZ_JOBS="${FUZZ_JOBS:-1}"
RSS_MB="${FUZZ_RSS_MB:-2048}"
NICE="${FUZZ_NICE:-0}"

if ! [[ "$SECS" =~ ^[0-9]+$ ]]; then
  echo "fuzz.sh: SECONDS must be a whole number, not '$SECS'" >&2
  exit 2
fi
if ! command -v clang >/dev/null; then
  echo "fuzz.sh: clang is not installed (scripts/setup.sh installs it)" >&2
  exit 2
fi

echo "fuzz: building the fuzz targets in $BUILD_DIR (clang, ASan + UBSan + libFuzzer)"
mkdir -p "$BUILD_DIR"
if ! CC=clang cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCTXGATE_FUZZ=ON \
    >"$BUILD_DIR/build.log" 2>&1 ||
  ! cmake --build "$BUILD_DIR" --target fuzz_all -j"$JOBS" >>"$BUILD_DIR/build.log" 2>&1; then
  grep -E 'error|Error' "$BUILD_DIR/build.log" | head -n 40
  echo "fuzz: build failed (log: $BUILD_DIR/build.log)"
  exit 1
fi

if [ "$#" -gt 0 ]; then
  NAMES=("$@")
else
  NAMES=()
  for f in "$ROOT"/tests/fuzz/fuzz_*.c; do
    n="$(basename "$f" .c)"
    NAMES+=("${n#fuzz_}")
  done
fi

# The sanitizers' reports must end the run (a finding), and leaks count.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

RESULTS="$(mktemp -d)"
trap 'rm -rf "$RESULTS"' EXIT

# run_one NAME — one target; writes "execs findings" to $RESULTS/NAME and its report line
run_one() {
  local name="$1" bin="$BUILD_DIR/tests/fuzz/fuzz_$1" seeds="$ROOT/tests/fuzz/corpus/$1"
  local regress="$ROOT/tests/fuzz/regressions/$1" findings="$BUILD_DIR/findings/$1"
  local log="$BUILD_DIR/findings/$1.log" work rc execs found args=()
  if [ ! -x "$bin" ]; then
    echo "fuzz $name: no such target ($bin)"
    echo "0 1" >"$RESULTS/$name"
    return
  fi
  mkdir -p "$findings"
  work="$(mktemp -d "${TMPDIR:-/tmp}/ctxgate-fuzz-$name.XXXXXX")"
  [ -d "$seeds" ] && cp -r "$seeds"/. "$work"/
  local dirs=("$work")
  [ -d "$regress" ] && dirs+=("$regress")
  local dict="$ROOT/tests/fuzz/$name.dict"
  case "$name" in chat_probe | sse | record) dict="$ROOT/tests/fuzz/json.dict" ;; esac
  [ -f "$dict" ] && args+=(-dict="$dict")
  if [ "$SECS" -eq 0 ]; then args+=(-runs=0); else args+=(-max_total_time="$SECS"); fi
  local before
  before="$(find "$findings" -type f | wc -l)"
  nice -n "$NICE" "$bin" "${args[@]}" -timeout=10 -rss_limit_mb="$RSS_MB" \
    -artifact_prefix="$findings/" -print_final_stats=1 "${dirs[@]}" >"$log" 2>&1
  rc=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\)/\1/p' "$log" | tail -n 1)"
  [ -n "$execs" ] || execs="$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)"
  [ -n "$execs" ] || execs="$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')"
  found=$(($(find "$findings" -type f | wc -l) - before))
  if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ]; then found=1; fi
  echo "fuzz $name: ${execs:-0} execs, $found findings"
  if [ "$found" -ne 0 ]; then
    # the report, the harness's own sentence, and the stack without libFuzzer's and libc's frames
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|fuzz_|[a-z].*(round trip|splice|answer))' "$log" |
      head -n 6 | sed 's/^/    /'
    grep -E '^ +#[0-9]+ ' "$log" | grep -vE 'fuzzer::|libc\.so|/nptl/|/stdlib/|signal/|__sanitizer|_start|LLVMFuzzerTestOneInput|in main ' |
      head -n 8 | sed 's/^/    /'
    grep -E 'Test unit written to|artifact_prefix' "$log" | sed 's/^/    /'
    echo "    log: $log"
  fi
  if [ "${FUZZ_KEEP_CORPUS:-0}" = "1" ]; then
    echo "    grown corpus kept in $work"
  else
    rm -rf "$work"
  fi
  echo "${execs:-0} $found" >"$RESULTS/$name"
}

running=0
for name in "${NAMES[@]}"; do
  if [ "$FUZZ_JOBS" -le 1 ]; then
    run_one "$name"
  else
    run_one "$name" &
    running=$((running + 1))
    if [ "$running" -ge "$FUZZ_JOBS" ]; then
      wait -n
      running=$((running - 1))
    fi
  fi
done
wait

total_execs=0
total_found=0
failed=()
for name in "${NAMES[@]}"; do
  read -r e f <"$RESULTS/$name" || { e=0; f=1; }
  total_execs=$((total_execs + e))
  total_found=$((total_found + f))
  [ "$f" -eq 0 ] || failed+=("$name")
done
echo "fuzz: ${#NAMES[@]} targets, $total_execs execs, $total_found findings${failed[*]:+ (in: ${failed[*]})}"
[ "$total_found" -eq 0 ]
