#!/usr/bin/env bash
# Installs, with apt-get, every Debian package switchyard needs to build, test and benchmark.
# Idempotent: packages already present are skipped; with nothing missing it touches nothing.
#   deploy/install-deps.sh            build + test dependencies
#   deploy/install-deps.sh --bench    also the benchmark's contenders (haproxy, nginx, wrk, ab), valgrind and perf
set -euo pipefail

build_pkgs=(g++ pkg-config meson ninja-build libuv1-dev libyaml-cpp-dev prometheus-cpp-dev
            nlohmann-json3-dev doctest-dev node-llhttp libpugixml-dev libssl-dev libnghttp2-dev)
test_pkgs=(clang libclang-rt-14-dev curl python3 python3-pytest python3-pytest-xdist python3-yaml python3-aiohttp python3-tornado python3-matplotlib
           prometheus docker-compose wrk python3-consul etcd-server etcd-client openssl python3-trustme testssl.sh
           chromium chromium-driver python3-selenium  # the dashboard tests drive a headless chromium
           nghttp2-client python3-h2  # HTTP/2: nghttp, h2load, and frames scripted with h2
           python3-grpcio)  # gRPC servers and clients for the HTTP/2-to-instances tests
bench_pkgs=(apache2-utils haproxy nginx-light valgrind linux-perf)

want=("${build_pkgs[@]}" "${test_pkgs[@]}")
[[ "${1:-}" == "--bench" ]] && want+=("${bench_pkgs[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The Consul/Eureka compatibility tests run node's `consul` and `eureka-js-client` packages: Debian's
# nodejs and npm, unless a node with npm is already there (another packaging of node would conflict).
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
