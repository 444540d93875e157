#!/usr/bin/env bash
# A first, small benchmark (issue 2's closing note; issue 7 grows it into the full comparison):
# wrk and ab through switchyard next to wrk and ab straight to the same nginx backend, in one run.
#   tests/bench/smoke.sh [SECONDS]        (default 10; the issue's check uses 60)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
deploy/install-deps.sh --bench
dir=$(deploy/build.sh release)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
port_free() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
b1=$(port_free); b2=$(port_free)
for p in $b1 $b2; do
  mkdir -p "$work/tmp-$p"
  sed -e "s#@PORT@#$p#g" -e "s#@DIR@#$work#g" tests/bench/backend-nginx.conf.in > "$work/nginx-$p.conf"
  nginx -c "$work/nginx-$p.conf" -p "$work" &
done
cat > "$work/sy.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
log_level: warn
services:
  bench:
    instances: [{ address: 127.0.0.1:$b1 }, { address: 127.0.0.1:$b2 }]
YAML
"$dir/switchyard" -c "$work/sy.yaml" 2> "$work/sy.log" &
sy_pid=$!
for _ in $(seq 100); do grep -q "listening proxy=" "$work/sy.log" 2>/dev/null && break; sleep 0.05; done
proxy=$(sed -n 's/.*listening proxy=\(.*\)$/\1/p' "$work/sy.log" | head -1)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$b1/" >/dev/null && curl -sf "http://127.0.0.1:$b2/" >/dev/null && break; sleep 0.05; done
echo "# switchyard smoke benchmark $(date -u +%F) on $(nproc) cores; ${secs}s per run"
run_wrk() { wrk -t1 -c50 -d"${secs}s" --latency -H "Host: bench" "http://$1/" | awk '/Requests\/sec/{rps=$2} /Non-2xx/{e=$NF} /Socket errors/{s=$0} / 50%/{p50=$2} / 99%/{p99=$2} END{printf "%s req/s  p50 %s  p99 %s  non2xx %s  %s\n", rps, p50, p99, (e==""?0:e), s}'; }
run_ab() { ab -q -t "$secs" -n 100000000 -c 20 -H "Host: bench" "http://$1/" 2>&1 | awk '/Requests per second/{r=$4} /Failed requests/{f=$3} /Non-2xx/{n=$3} END{printf "%s req/s  failed %s  non2xx %s\n", r, f, (n==""?0:n)}'; }
echo "wrk direct to backend: $(run_wrk 127.0.0.1:$b1)"
echo "wrk via switchyard:    $(run_wrk "$proxy")"
echo "ab  direct to backend: $(run_ab 127.0.0.1:$b1)"
echo "ab  via switchyard:    $(run_ab "$proxy")"
echo "switchyard RSS: $(awk '/VmRSS/{print $2, $3}' /proc/$sy_pid/status)"
