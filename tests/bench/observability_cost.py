#!/usr/bin/env python3
"""What do metrics and the access log cost? (issue 6) Three switchyard processes on the same nginx
backend — metrics off, metrics on (the default), metrics on + access log to a file — driven by wrk in
turn (A B C A B C ...), medians of the rounds.
    /usr/bin/python3 tests/bench/observability_cost.py [ROUNDS]"""
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
os.environ.setdefault("SWITCHYARD_BIN", os.path.join(HERE, "..", "..", "build-release", "switchyard"))
from harness import Proxy, wait_until  # noqa: E402
from probe_load import free_port, wrk  # noqa: E402


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    work = tempfile.mkdtemp()
    port = free_port()
    conf = open(os.path.join(HERE, "backend-nginx.conf.in")).read().replace("@PORT@", str(port)).replace("@DIR@", work)
    os.makedirs(f"{work}/tmp-{port}", exist_ok=True)
    open(f"{work}/nginx.conf", "w").write(conf)
    nginx = subprocess.Popen(["nginx", "-c", f"{work}/nginx.conf", "-p", work])
    try:
        wait_until(lambda: subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/"], capture_output=True).returncode == 0)
        svc = f"services:\n  bench:\n    instances: [{{ address: 127.0.0.1:{port} }}]\n"
        variants = {
            "metrics off": Proxy("log_level: warn\nmetrics: false\n" + svc, tmpdir=tempfile.mkdtemp()),
            "metrics on": Proxy("log_level: warn\n" + svc, tmpdir=tempfile.mkdtemp()),
            "metrics + access log": Proxy(f"log_level: warn\naccess_log: {work}/access.log\n" + svc, tmpdir=tempfile.mkdtemp()),
        }
        results = {k: [] for k in variants}
        for _ in range(rounds):
            for name, p in variants.items():
                results[name].append(wrk(p.addr, 5))
        base = statistics.median(r for r, _ in results["metrics off"])
        for name, rs in results.items():
            rps = statistics.median(r for r, _ in rs)
            p99 = statistics.median(l for _, l in rs)
            print(f"{name:22s} {rps:9.0f} req/s  p99 {p99:5.0f} us  ratio to metrics off {rps / base:.3f}")
        for p in variants.values():
            p.stop()
    finally:
        nginx.terminate()
        nginx.wait()


if __name__ == "__main__":
    main()
