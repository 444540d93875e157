#!/usr/bin/env bash
# Configures (once) and builds one flavour of switchyard with meson + ninja.
#   deploy/build.sh release   → build-release/  (the binary users run; also the benchmark's)
#   deploy/build.sh plain     → build/          (debug-optimized, what the tests use)
#   deploy/build.sh asan      → build-asan/     (AddressSanitizer + UndefinedBehaviorSanitizer)
#   deploy/build.sh tsan      → build-tsan/     (ThreadSanitizer; tests run with worker threads)
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:-plain}
case "$flavour" in
  release) dir=build-release; opts=(--buildtype=release) ;;
  plain)   dir=build;         opts=(--buildtype=debugoptimized) ;;
  asan)    dir=build-asan;    opts=(--buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false) ;;
  tsan)    dir=build-tsan;    opts=(--buildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false) ;;
  *) echo "usage: $0 release|plain|asan|tsan" >&2; exit 2 ;;
esac
opts+=(-Dwerror=true)  # warnings are errors in project code (not a default: see meson.build)
if [[ ! -f "$dir/build.ninja" ]]; then
  meson setup "$dir" "${opts[@]}" >/dev/null
fi
ninja -C "$dir" >&2
echo "$dir"
