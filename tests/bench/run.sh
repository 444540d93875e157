#!/usr/bin/env bash
# The benchmark: switchyard against HAProxy 2.6 and nginx 1.22 (Debian's), side by side.
# Installs what is missing, builds the release binary, runs tests/bench/bench.py, writes
# tests/bench/results.md and the README's performance table.   ~10 minutes on 2 cores.
#   tests/bench/run.sh [--quick] [--rounds N] [--secs S]
#   tests/bench/run.sh --tls [--quick] ...   TLS termination instead (tests/bench/tls_bench.py, ~6 minutes)
#   tests/bench/run.sh --h2 [--quick] ...    HTTP/2 from clients instead (tests/bench/h2_bench.py, ~6 minutes)
#   tests/bench/run.sh --grpc [--quick] ...  gRPC unary calls instead (tests/bench/grpc_bench.py, ~2 minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/install-deps.sh --bench
dir=$(deploy/build.sh release)
script=tests/bench/bench.py
if [[ "${1:-}" == --tls ]]; then
  script=tests/bench/tls_bench.py
  shift
elif [[ "${1:-}" == --h2 ]]; then
  script=tests/bench/h2_bench.py
  shift
elif [[ "${1:-}" == --grpc ]]; then
  script=tests/bench/grpc_bench.py
  shift
fi
SWITCHYARD_BIN="$PWD/$dir/switchyard" exec /usr/bin/python3 "$script" "$@"
