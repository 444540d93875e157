#!/usr/bin/env python3
"""Does probing 5,000 instances every second disturb the proxy? (issue 4; part of the benchmark)
wrk through switchyard to one nginx backend, without and then with 5,000 registered instances of
another service, each TCP-probed every 1 s (against the same nginx), interleaved A B A B.
Run: /usr/bin/python3 tests/bench/probe_load.py   (needs nginx and wrk: deploy/install-deps.sh --bench)"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
os.environ.setdefault("SWITCHYARD_BIN", os.path.join(HERE, "..", "..", "build-release", "switchyard"))
from harness import Client, Proxy, request_bytes, wait_until  # noqa: E402
import json  # noqa: E402
from upstream import start_nginx_backend  # noqa: E402


def wrk(addr, secs=5):
    out = subprocess.run(["wrk", "-t1", "-c50", f"-d{secs}s", "--latency", "-H", "Host: bench", f"http://{addr[0]}:{addr[1]}/"],
                         capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1, "ms": 1000, "s": 1e6}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def main():
    nginx, work, port = start_nginx_backend()
    try:
        p = Proxy(f"log_level: warn\nservices:\n  bench:\n    instances: [{{ address: 127.0.0.1:{port} }}]\n", tmpdir=work)
        a = Client(p.admin)

        def call(method, path, body=None):
            data = json.dumps(body).encode() if body is not None else b""
            a.send(request_bytes(method, path, "admin", [("Content-Length", str(len(data)))], data))
            return a.reader.read_response().status

        base, probed = [], []
        for rnd in range(5):  # interleaved: without, with, without, with, ...
            base.append(wrk(p.addr))
            for i in range(5000):
                assert call("PUT", f"/v1/services/probed/instances/i{i}",
                            {"address": f"127.0.0.1:{port}", "ttl": "1h",
                             "health_check": {"type": "tcp", "interval": "1s", "timeout": "500ms"}}) == 201
            time.sleep(2)  # the first probes (at once) are over; the steady 5,000/s remain
            probed.append(wrk(p.addr))
            for i in range(5000):
                assert call("DELETE", f"/v1/services/probed/instances/i{i}") == 204
        p.stop()
        b_rps = statistics.median(r for r, _ in base)
        p_rps = statistics.median(r for r, _ in probed)
        b_p99 = statistics.median(l for _, l in base)
        p_p99 = statistics.median(l for _, l in probed)
        print(f"without probes: {b_rps:.0f} req/s, p99 {b_p99:.0f} us  (medians of 5)")
        print(f"5,000 instances TCP-probed every 1 s: {p_rps:.0f} req/s, p99 {p_p99:.0f} us  (medians of 5)")
        print(f"throughput ratio {p_rps / b_rps:.3f}")
    finally:
        nginx.terminate()
        nginx.wait()


if __name__ == "__main__":
    main()
