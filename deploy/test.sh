#!/usr/bin/env bash
# Installs what is missing, builds the release flavour, and runs every test: unit (doctest) and
# integration (pytest against the real binary on loopback), first in the plain build, then under AddressSanitizer +
# UndefinedBehaviorSanitizer, then under ThreadSanitizer with every proxy started at `workers: 2`
# (SWITCHYARD_TEST_WORKERS); then every libFuzzer target (tests/fuzz/) for FUZZ_SECONDS (60) each,
# clang + ASan + UBSan (deploy/fuzz.sh). Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp}
total_ok=0; total_fail=0
# The release build first (what quickstart and packagers run): GCC at -O3 warns where -O2 does not,
# and warnings are errors.
release_dir=$(deploy/build.sh release)  # an assignment, so a failed build stops the script (set -e)
echo "== build: release ($release_dir)"
for flavour in plain asan tsan; do
  dir=$(deploy/build.sh "$flavour")
  workers=1; [[ $flavour == tsan ]] && workers=2
  echo "== tests: $flavour build ($dir), workers: $workers"
  set +e
  SWITCHYARD_TEST_WORKERS=$workers meson test -C "$dir" --print-errorlogs --num-processes 2
  rc=$?
  set -e
  ok=$(grep -c '"result": "OK"' "$dir/meson-logs/testlog.json" || true)
  fail=$(grep -c '"result": "\(FAIL\|TIMEOUT\|ERROR\)"' "$dir/meson-logs/testlog.json" || true)
  total_ok=$((total_ok + ok)); total_fail=$((total_fail + fail))
  if [[ $rc -ne 0 ]]; then
    echo "$total_ok passed, $total_fail failed"
    exit "$rc"
  fi
done
echo "== fuzzing: each target ${FUZZ_SECONDS:-60} s (deploy/fuzz.sh)"
set +e
fuzz_out=$(deploy/fuzz.sh "${FUZZ_SECONDS:-60}")
rc=$?
set -e
echo "$fuzz_out"
summary=$(echo "$fuzz_out" | tail -1)
ok=$(echo "$summary" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
fail=$(echo "$summary" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
total_ok=$((total_ok + ${ok:-0})); total_fail=$((total_fail + ${fail:-1}))
if [[ $rc -ne 0 ]]; then
  echo "$total_ok passed, $total_fail failed"
  exit "$rc"
fi
echo "$total_ok passed, $total_fail failed"
