#!/usr/bin/env python3
"""A/B: CPU per keep-alive request of two switchyard binaries, same run, interleaved.
    /usr/bin/python3 tests/bench/ab_request_cost.py OLD_BINARY NEW_BINARY [--rounds N] [--secs S]
Each round runs wrk (1 thread, 16 keep-alive connections) through each binary in turn (workers: 1,
an nginx upstream answering "ok") and divides the proxy's CPU time (user + system, /proc) by the
requests served; prints every round and the medians. CPU time per request is what a refactor of the
request path must not make worse (issue 13); alternating A and B cancels most of a shared machine's
drift."""
import argparse
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import Proxy  # noqa: E402
from upstream import start_nginx_backend  # noqa: E402


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(binary, port, secs):
    os.environ["SWITCHYARD_BIN"] = binary
    import harness
    harness.BIN = binary
    p = Proxy(f"workers: 1\nlog_level: warn\nservices:\n  s:\n    instances:\n      - {{ address: 127.0.0.1:{port} }}\n")
    try:
        subprocess.run(["wrk", "-t1", "-c16", "-d1s", "-H", "Host: s", f"http://{p.addr[0]}:{p.addr[1]}/"],
                       capture_output=True, timeout=60)  # warm-up: pools, caches
        c0 = cpu_seconds(p.proc.pid)
        out = subprocess.run(["wrk", "-t1", "-c16", f"-d{secs}s", "-H", "Host: s", f"http://{p.addr[0]}:{p.addr[1]}/"],
                             capture_output=True, text=True, timeout=secs + 60).stdout
        c1 = cpu_seconds(p.proc.pid)
    finally:
        p.stop()
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return (c1 - c0) / total * 1e6, total / secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--secs", type=int, default=5)
    a = ap.parse_args()
    nginx, work, port = start_nginx_backend()
    res = {"old": [], "new": []}
    try:
        for r in range(a.rounds):
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                us, rps = one(getattr(a, name), port, a.secs)
                res[name].append(us)
                print(f"round {r + 1} {name}: {us:.2f} CPU-us per request, {rps:,.0f} req/s", flush=True)
    finally:
        nginx.terminate()
    mo, mn = statistics.median(res["old"]), statistics.median(res["new"])
    print(f"median: old {mo:.2f}, new {mn:.2f} CPU-us per request (new/old {mn / mo:.3f})")


if __name__ == "__main__":
    main()
