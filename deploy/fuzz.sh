#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with clang + AddressSanitizer + UndefinedBehaviorSanitizer
# in build-fuzz/ and runs each for SECONDS (default 60), starting from the seed corpus in
# tests/fuzz/corpus/<target>/ (read only: what a run discovers goes to build-fuzz/corpus/<target>/).
# A crash leaves its input as build-fuzz/crash-<target>-*; turn it into a regression test.
#   deploy/fuzz.sh [SECONDS] [TARGET...]
# Targets run side by side, one per core (FUZZ_JOBS). Prints one line per target and
# "N passed, N failed"; exits non-zero if any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh >&2
seconds=${1:-60}
shift || true
dir=build-fuzz
if [[ ! -f "$dir/build.ninja" ]]; then
  CC=clang CXX=clang++ meson setup "$dir" --buildtype=debugoptimized -Dfuzz=true -Dwerror=true \
    -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
ninja -C "$dir" >&2
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=()
  for d in tests/fuzz/corpus/*/; do targets+=("$(basename "$d")"); done
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# One target: its result line goes to $dir/<target>.result (targets run side by side, so
# the lines are printed afterwards, in order).
run_one() {
  local t=$1 work="$dir/corpus/$1" log="$dir/$1.log"
  mkdir -p "$work"
  if "$dir/tests/fuzz/$t" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$dir/crash-$t-" \
       -timeout=10 -rss_limit_mb=2048 "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
    echo "fuzz $t: ok, $execs runs in ${seconds}s, coverage $cov" >"$dir/$t.result"
  else
    echo "fuzz $t: FAILED (see $log)" >"$dir/$t.result"
  fi
}
# Each libFuzzer run uses one core: run as many at once as there are cores (FUZZ_JOBS to change),
# so the suite's wall time is not the sum of every target's SECONDS.
jobs=${FUZZ_JOBS:-$(nproc)}
((jobs >= 1)) || jobs=1
running=0
for t in "${targets[@]}"; do
  rm -f "$dir/$t.result"
  if ((running >= jobs)); then
    wait -n || true
    running=$((running - 1))
  fi
  run_one "$t" &
  running=$((running + 1))
done
wait || true
ok=0; failed=0
for t in "${targets[@]}"; do
  line=$(cat "$dir/$t.result" 2>/dev/null || echo "fuzz $t: FAILED (no result; see $dir/$t.log)")
  echo "$line"
  if [[ $line == *": ok,"* ]]; then
    ok=$((ok + 1))
  else
    tail -30 "$dir/$t.log" 2>/dev/null || true
    failed=$((failed + 1))
  fi
done
echo "$ok passed, $failed failed"
[[ $failed -eq 0 ]]
