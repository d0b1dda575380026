#!/usr/bin/env bash
# test.sh — builds ctxgate and runs every suite: the cmocka unit tests (ctest) and the node
# integration tests (tests/integration/, the real SDKs against the real binary). With CI=true or
# CTXGATE_SANITIZE=1 it also builds build-asan (ASan + UBSan, leak checks on) and runs both suites
# again against that build. Counts individual test cases (cmocka's and node's own counts) and ends
# with exactly one line `N passed, M failed`; exits non-zero when anything failed or nothing ran.
#
# Environment: JOBS (parallel build jobs, default nproc), CTXGATE_SANITIZE (1/0, default: on when
# CI=true), CTXGATE_BUILD_DIR / CTXGATE_ASAN_BUILD_DIR (default build, build-asan; relative to the
# repo), CTXGATE_SKIP_INTEGRATION=1 (unit tests only), CTXGATE_TEST_FILTER (node --test-name-pattern).
# With CI=true or CTXGATE_FUZZ_SECONDS set, it also runs scripts/fuzz.sh: every libFuzzer target of
# tests/fuzz/ over its corpus plus CTXGATE_FUZZ_SECONDS (default 60) of fresh mutation, two targets
# at a time (CTXGATE_FUZZ_JOBS); each target counts as one test. CTXGATE_FUZZ_SECONDS=0 runs the
# corpora only; CTXGATE_SKIP_FUZZ=1 skips the step.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT="$PWD"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
BUILD_DIR="${CTXGATE_BUILD_DIR:-build}"
ASAN_BUILD_DIR="${CTXGATE_ASAN_BUILD_DIR:-build-asan}"

if [ -n "${CTXGATE_SANITIZE:-}" ]; then
  SANITIZE="$CTXGATE_SANITIZE"
elif [ "${CI:-}" = "true" ]; then
  SANITIZE=1
else
  SANITIZE=0
fi

PASSED=0
FAILED=0
STEP_FAILURES=()

note() { printf '\n=== %s\n' "$*"; }
fail_step() {
  FAILED=$((FAILED + 1))
  STEP_FAILURES+=("$1")
  echo "!!! FAILED: $1"
}

# build DIR LOG CMAKE_ARGS... — configure and build everything; 0 on success
build() {
  local dir="$1" log="$2"
  shift 2
  mkdir -p "$dir"
  if ! cmake -S "$ROOT" -B "$dir" "$@" >"$log" 2>&1; then
    tail -n 40 "$log"
    return 1
  fi
  if ! cmake --build "$dir" -j"$JOBS" >>"$log" 2>&1; then
    grep -E 'error|Error' "$log" | head -n 40
    tail -n 20 "$log"
    return 1
  fi
  return 0
}

# unit_tests DIR LABEL — ctest, counting cmocka test cases (tests/lib/ctest-summary.mjs reads the
# verbose log); adds to PASSED/FAILED
unit_tests() {
  local dir="$1" label="$2" log="$1/ctest-verbose.log" rc out counts p f
  ctest --test-dir "$dir" -V --timeout 120 -j"$JOBS" >"$log" 2>&1
  rc=$?
  if ! out="$(node "$ROOT/tests/lib/ctest-summary.mjs" "$log")"; then
    echo "--- $label unit tests: cannot read $log"
    out="0 1"
  fi
  counts="$(printf '%s\n' "$out" | tail -n 1)"
  printf '%s\n' "$out" | sed '$d'
  p="${counts% *}"
  f="${counts#* }"
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    if grep -q 'No tests were found' "$log"; then :; else f=1; fi
  fi
  echo "--- $label unit tests: $p passed, $f failed (full log: $log)"
  PASSED=$((PASSED + p))
  FAILED=$((FAILED + f))
  [ "$f" -eq 0 ] || STEP_FAILURES+=("$label unit tests")
}

# integration_tests BIN LABEL — node --test over tests/integration/*.test.mjs against BIN
integration_tests() {
  local bin="$1" label="$2" tap rc tests pass skipped todo f
  tap="$(dirname "$bin")/integration.tap"
  local files=("$ROOT"/tests/integration/*.test.mjs)
  if [ ! -e "${files[0]}" ]; then
    echo "--- no integration tests found"
    return
  fi
  local extra=()
  if node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=11)?0:1)'; then
    extra+=(--test-timeout=180000)
  fi
  if [ -n "${CTXGATE_TEST_FILTER:-}" ]; then extra+=(--test-name-pattern="$CTXGATE_TEST_FILTER"); fi
  rm -f "$tap"
  CTXGATE_BIN="$bin" node --test "${extra[@]}" \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap" \
    "${files[@]}"
  rc=$?
  tests="$(sed -n 's/^# tests \([0-9]*\)$/\1/p' "$tap" 2>/dev/null | tail -n 1)"
  pass="$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$tap" 2>/dev/null | tail -n 1)"
  skipped="$(sed -n 's/^# skipped \([0-9]*\)$/\1/p' "$tap" 2>/dev/null | tail -n 1)"
  todo="$(sed -n 's/^# todo \([0-9]*\)$/\1/p' "$tap" 2>/dev/null | tail -n 1)"
  if [ -z "$tests" ] || [ -z "$pass" ]; then
    echo "--- $label integration tests: node's runner gave no counts (exit $rc)"
    pass=0
    f=1
  else
    # cancelled tests (a failed before-hook, a timeout) count as failed
    f=$((tests - pass - ${skipped:-0} - ${todo:-0}))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  fi
  # skipped suites and tests say why (e.g. the real-API-server mode without CTXGATE_KUBE_ASSETS):
  # reported, never counted as passed
  local skips
  skips="$(grep -E '^ *ok [0-9]+ - .* # SKIP' "$tap" 2>/dev/null | sed -E 's/^ *ok [0-9]+ - //' | sort -u)"
  if [ -n "$skips" ]; then
    echo "--- $label integration tests skipped ($(printf '%s\n' "$skips" | wc -l)):"
    printf '%s\n' "$skips" | sed 's/^/    /'
  fi
  echo "--- $label integration tests: $pass passed, $f failed"
  PASSED=$((PASSED + pass))
  FAILED=$((FAILED + f))
  [ "$f" -eq 0 ] || STEP_FAILURES+=("$label integration tests")
}

run_build() {
  local label="$1" dir="$2"
  shift 2
  note "$label: configure and build in $dir"
  if ! build "$dir" "$dir/build.log" "$@"; then
    fail_step "$label build (log: $dir/build.log)"
    return
  fi
  note "$label: unit tests (ctest)"
  unit_tests "$dir" "$label"
  if [ "${CTXGATE_SKIP_INTEGRATION:-0}" != "1" ]; then
    note "$label: integration tests (node --test, CTXGATE_BIN=$dir/ctxgate)"
    local bin="$dir/ctxgate"
    case "$bin" in /*) ;; *) bin="$ROOT/$bin" ;; esac
    if [ -x "$bin" ]; then
      integration_tests "$bin" "$label"
    else
      fail_step "$label: $dir/ctxgate was not built"
    fi
  fi
}

# Source checks, one test each: the code is clang-formatted and cppcheck finds nothing.
source_checks() {
  local files
  mapfile -t files < <(git ls-files 'src/*.c' 'src/*.h' 'tests/unit/*.c' 'tests/unit/*.h' 2>/dev/null)
  [ "${#files[@]}" -gt 0 ] || return 0
  note "source checks: clang-format, cppcheck"
  if command -v clang-format >/dev/null; then
    if clang-format --dry-run --Werror "${files[@]}" >"$ROOT/$BUILD_DIR/format.log" 2>&1; then
      PASSED=$((PASSED + 1))
      echo "--- clang-format: ok"
    else
      head -n 20 "$ROOT/$BUILD_DIR/format.log"
      fail_step "clang-format (run: make format)"
    fi
  fi
  if command -v cppcheck >/dev/null; then
    if cppcheck --enable=warning,performance,portability --std=c11 --quiet --error-exitcode=1 \
        -I src src >"$ROOT/$BUILD_DIR/cppcheck.log" 2>&1; then
      PASSED=$((PASSED + 1))
      echo "--- cppcheck: ok"
    else
      head -n 20 "$ROOT/$BUILD_DIR/cppcheck.log"
      fail_step "cppcheck"
    fi
  fi
}

run_build release "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo
source_checks

if [ "$SANITIZE" = "1" ]; then
  # leak checks on for everything the sanitizer build runs, unless the caller chose otherwise
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
  run_build asan "$ASAN_BUILD_DIR" -DCMAKE_BUILD_TYPE=Debug -DCTXGATE_SANITIZE=ON
  unset ASAN_OPTIONS UBSAN_OPTIONS
fi

# Fuzzing: scripts/fuzz.sh prints `fuzz <name>: N execs, K findings` per target; one test each.
fuzz_step() {
  local secs="${CTXGATE_FUZZ_SECONDS:-60}" log="$ROOT/$BUILD_DIR/fuzz.log" line name found n=0
  note "fuzz: every target over its corpus + ${secs}s of mutation (scripts/fuzz.sh)"
  mkdir -p "$ROOT/$BUILD_DIR"
  FUZZ_JOBS="${CTXGATE_FUZZ_JOBS:-2}" JOBS="$JOBS" "$ROOT/scripts/fuzz.sh" "$secs" 2>&1 | tee "$log"
  while IFS= read -r line; do
    [[ "$line" =~ ^fuzz\ ([a-z0-9_]+):\ ([0-9]+)\ execs,\ ([0-9]+)\ findings ]] || continue
    name="${BASH_REMATCH[1]}"
    found="${BASH_REMATCH[3]}"
    n=$((n + 1))
    if [ "$found" -eq 0 ]; then
      PASSED=$((PASSED + 1))
    else
      fail_step "fuzz $name (reproducer under build-fuzz/findings/$name/)"
    fi
  done <"$log"
  if [ "$n" -eq 0 ]; then fail_step "fuzz (no target ran; log: $log)"; fi
}

if [ "${CTXGATE_SKIP_FUZZ:-0}" != "1" ] &&
  { [ "${CI:-}" = "true" ] || [ -n "${CTXGATE_FUZZ_SECONDS:-}" ]; }; then
  fuzz_step
fi

if [ $((PASSED + FAILED)) -eq 0 ]; then
  echo "!!! no test ran"
  FAILED=1
fi
if [ "${#STEP_FAILURES[@]}" -gt 0 ]; then
  echo
  echo "failed: ${STEP_FAILURES[*]}"
fi
echo
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
