#!/usr/bin/env bash
# Quick start on a fresh Debian 12 machine: installs what is missing, builds switchyard, starts
# two demo backends (127.0.0.1:9001 and :9002) and switchyard on conf/switchyard.yaml
# (proxy 127.0.0.1:8080, admin 127.0.0.1:9901, embedded registry). Ctrl-C stops everything.
#
#   curl -H 'Host: demo' 127.0.0.1:8080/        # answers from demo-1, then demo-2, ...
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
dir=$(deploy/build.sh release)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
/usr/bin/python3 deploy/examples/demo_backend.py --port 9001 --name demo-1 & pids+=($!)
/usr/bin/python3 deploy/examples/demo_backend.py --port 9002 --name demo-2 & pids+=($!)
echo "switchyard: proxy http://127.0.0.1:8080  admin http://127.0.0.1:9901  (try: curl -H 'Host: demo' 127.0.0.1:8080/)" >&2
"$dir/switchyard" -c conf/switchyard.yaml & pids+=($!)
wait "${pids[-1]}"
