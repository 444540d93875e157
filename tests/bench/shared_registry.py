#!/usr/bin/env python3
"""The shared registry on etcd, measured (issue 15), against a 3-member etcd cluster on loopback:
    /usr/bin/python3 tests/bench/shared_registry.py [--binary build-release/switchyard] [--rounds 3] [--secs 5]
1. Request path: CPU-us per keep-alive request with registry.backend etcd vs embedded, same binary,
   rounds interleaved (wrk, 1 thread, 16 connections; workers: 1; an nginx upstream registered
   dynamically in both modes).
2. Registrations/s through one proxy, and through two at once (wrk + register.lua, 16 keep-alive
   connections per proxy, for --secs): every one acknowledged after etcd committed it.
3. Propagation lag: 1,000 registrations through A, each polled for on B right after A acknowledged
   it; p50/p99.
Prints a Markdown summary at the end."""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402
from etcd_cluster import EtcdCluster  # noqa: E402
from harness import Proxy, admin, wait_until  # noqa: E402
from upstream import start_nginx_backend  # noqa: E402

LUA = os.path.join(HERE, "register.lua")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def config(cluster, backend, prefix):
    head = "workers: 1\nlog_level: warn\n"
    if backend == "embedded":
        return head
    return head + ("registry:\n  backend: etcd\n  etcd:\n    endpoints: [" + ", ".join(cluster.endpoints) +
                   f"]\n    prefix: {prefix}\n")


def ready(p):
    wait_until(lambda: admin(p.admin, "GET", "/readyz")[0] == 200, 60, 0.02, what="ready")
    return p


def request_cost(cluster, backend, port, secs, n):
    p = ready(Proxy(config(cluster, backend, f"/bench-cost-{n}/")))
    try:
        assert admin(p.admin, "PUT", "/v1/services/s/instances/u", {"address": f"127.0.0.1:{port}"})[0] == 201
        url = f"http://{p.addr[0]}:{p.addr[1]}/"
        subprocess.run(["wrk", "-t1", "-c16", "-d1s", "-H", "Host: s", url], capture_output=True, timeout=60)
        c0 = cpu_seconds(p.proc.pid)
        out = subprocess.run(["wrk", "-t1", "-c16", f"-d{secs}s", "-H", "Host: s", url], capture_output=True, text=True,
                             timeout=secs + 60).stdout
        c1 = cpu_seconds(p.proc.pid)
    finally:
        p.stop()
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return (c1 - c0) / total * 1e6, total / secs


def wrk_register(p, service, secs):
    env = dict(os.environ, SY_SERVICE=service, SY_IDS="1000000", SY_ADDRESS="127.0.0.1:9")
    return subprocess.Popen(["wrk", "-t1", "-c16", f"-d{secs}s", "-s", LUA, f"http://{p.admin[0]}:{p.admin[1]}/"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wrk_rate(proc):
    out, err = proc.communicate(timeout=600)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    secs = float(re.search(r"requests in ([\d.]+)s", out).group(1))
    bad = err.count("unexpected status")
    return total / secs, bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build-release", "switchyard"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    a = ap.parse_args()
    harness.BIN = a.binary
    tmp = tempfile.mkdtemp(prefix="sy-bench-etcd-")
    cluster = EtcdCluster(tmp)
    nginx, work, port = start_nginx_backend()
    summary = []
    try:
        # 1. request path
        cost = {"embedded": [], "etcd": []}
        for r in range(a.rounds):
            for backend in (("embedded", "etcd") if r % 2 == 0 else ("etcd", "embedded")):
                us, rps = request_cost(cluster, backend, port, a.secs, r)
                cost[backend].append(us)
                print(f"round {r + 1} {backend}: {us:.2f} CPU-us per request, {rps:,.0f} req/s", flush=True)
        e, s = statistics.median(cost["embedded"]), statistics.median(cost["etcd"])
        summary.append(f"| CPU-us per keep-alive request, embedded vs etcd (median of {a.rounds}) | {e:.2f} vs {s:.2f} ({s / e:.2f}x) |")

        # 2. registration rates
        pa = ready(Proxy(config(cluster, "etcd", "/bench-rate/")))
        pb = ready(Proxy(config(cluster, "etcd", "/bench-rate/")))
        try:
            one, bad1 = wrk_rate(wrk_register(pa, "one", a.secs))
            wa, wb = wrk_register(pa, "twoa", a.secs), wrk_register(pb, "twob", a.secs)
            (ra, bada), (rb, badb) = wrk_rate(wa), wrk_rate(wb)
            print(f"registrations/s through one proxy: {one:,.0f} ({bad1} not 200/201); through two: {ra + rb:,.0f} "
                  f"({ra:,.0f} + {rb:,.0f}; {bada + badb} not 200/201)", flush=True)
            summary.append(f"| registrations/s, acknowledged after etcd's commit, one proxy | {one:,.0f} |")
            summary.append(f"| registrations/s, two proxies at once | {ra + rb:,.0f} ({ra:,.0f} + {rb:,.0f}) |")
            # 3. propagation lag, on a quiet cluster
            lags = []
            for i in range(1000):
                assert admin(pa.admin, "PUT", f"/v1/services/lag/instances/i{i}", {"address": "127.0.0.1:9"})[0] == 201
                t0 = time.monotonic()
                wait_until(lambda: admin(pb.admin, "GET", f"/v1/services/lag/instances/i{i}")[0] == 200, 60, 0)
                lags.append(time.monotonic() - t0)
            lags.sort()
            p50, p99 = lags[len(lags) // 2] * 1000, lags[int(len(lags) * 0.99)] * 1000
            print(f"propagation A ack -> visible on B: p50 {p50:.2f} ms, p99 {p99:.2f} ms", flush=True)
            summary.append(f"| propagation, A's acknowledgement to visible on B (1,000 registrations) | p50 {p50:.2f} ms, p99 {p99:.2f} ms |")
        finally:
            pa.stop()
            pb.stop()

        # 4. a new proxy's sync of 10,000 instances
        pw = ready(Proxy(config(cluster, "etcd", "/bench-sync/")))
        try:
            w = wrk_register(pw, "sync", 30)
            # stop once 10,000 distinct ids are in (register.lua counts up from i0)
            wait_until(lambda: len((admin(pw.admin, "GET", "/v1/services/sync")[1] or {}).get("instances", [])) >= 10000, 300, 0.5)
            w.terminate()
            w.communicate()
        finally:
            pw.stop()
        t0 = time.monotonic()
        pn = ready(Proxy(config(cluster, "etcd", "/bench-sync/")))
        took = (time.monotonic() - t0) * 1000
        n = len(admin(pn.admin, "GET", "/v1/services/sync")[1]["instances"])
        pn.stop()
        print(f"new proxy, process start to ready with {n:,} instances: {took:.0f} ms", flush=True)
        summary.append(f"| new proxy: start to ready, {n:,} instances read from etcd | {took:.0f} ms |")
    finally:
        nginx.terminate()
        cluster.close()
    print("\n| measure | result |\n|---|---|")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
