#!/usr/bin/env python3
"""HTTP/2 from clients: switchyard against HAProxy and nginx, side by side in one run (issue 24).
Run it with tests/bench/run.sh --h2 (installs what is missing, builds the release binary).

Every contender takes HTTP/2 with prior knowledge on a plain port (switchyard by the preface,
HAProxy `proto h2`, nginx `listen … http2`) in front of the same two HTTP/1.1 nginx upstreams as
tests/bench/bench.py, one worker/thread each. Measured, interleaved A B C per round, medians:
  - requests/s and mean time per request, h2load -c10 -m10 (10 connections × 10 streams);
  - memory per idle HTTP/2 connection (preface, SETTINGS, one request answered, then idle), --idle
    clients; and switchyard's memory per idle HTTP/1.1 connection in the same run.
Writes tests/bench/h2_results.md."""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402
from bench import Contender  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class H2Contender(Contender):
    def __init__(self, name, work, b1, b2):
        super().__init__(name, work, b1, b2, 1, tag="-h2")

    def adjust(self, text):
        if self.name == "switchyard":
            return text + "routes:\n  - { service: bench }\n"  # whatever :authority h2load sends
        if self.name == "haproxy":
            return text.replace(f"bind 127.0.0.1:{self.port}", f"bind 127.0.0.1:{self.port} proto h2")
        return text.replace(f"listen 127.0.0.1:{self.port} reuseport;", f"listen 127.0.0.1:{self.port} reuseport http2;")


def h2load(c, n):
    out = subprocess.run(["h2load", "-n", str(n), "-c", "10", "-m", "10", "-H", ":authority: bench", f"http://{c.addr}/"],
                         capture_output=True, text=True, timeout=600).stdout
    rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    ok = int(re.search(r"(\d+) succeeded", out).group(1))
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out).group(1)
    mean_us = float(mean[:-2]) * 1000 if mean.endswith("ms") else float(mean[:-2]) if mean.endswith("us") else float(mean[:-1]) * 1e6
    return {"rps": rps, "mean_us": mean_us, "failed": n - ok}


def idle_h2_memory(c, n):
    """KiB per idle HTTP/2 connection: preface + SETTINGS (+ ACK) + one GET answered, then idle
    (bench.idle_memory's loop, its HTTP/1.1 request replaced by these frames)."""
    import hpack
    from hyperframe.frame import HeadersFrame, SettingsFrame
    h = HeadersFrame(1, hpack.Encoder().encode([(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "bench")]))
    h.flags.add("END_HEADERS")
    h.flags.add("END_STREAM")
    ack = SettingsFrame(0)
    ack.flags.add("ACK")
    return bench.idle_memory(c, n, request=PREFACE + SettingsFrame(0).serialize() + ack.serialize() + h.serialize(),
                             answered=lambda data: b"ok\n" in data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100000)
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.requests, a.idle = 1, 20000, 1000
    work = bench.workdir("switchyard-h2bench-")
    ports, backends = bench.start_upstreams(work)
    names = ("switchyard", "haproxy", "nginx")
    cs = [H2Contender(n, work, ports[0], ports[1]).start() for n in names]
    try:
        runs = {n: [] for n in names}
        for _ in range(a.rounds):
            for c in cs:
                runs[c.name].append(h2load(c, a.requests))
        mem = {c.name: idle_h2_memory(c, a.idle) for c in cs}
    finally:
        for c in cs:
            c.stop()
    plain = Contender("switchyard", work, ports[0], ports[1], 1, tag="-h1").start()
    try:
        h1 = bench.idle_memory(plain, a.idle)
    finally:
        plain.stop()
        for b in backends:
            b.terminate()
    ref = statistics.median(r["rps"] for r in runs["haproxy"])
    lines = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores; h2load -n {a.requests} -c10 -m10, "
             f"{a.rounds} interleaved rounds, medians; one worker/thread each; {a.idle} idle connections.", "",
             "| proxy | HTTP/2 req/s | vs HAProxy | mean µs per request | failed | KiB per idle HTTP/2 connection |",
             "|---|---:|---:|---:|---:|---:|"]
    for n in names:
        rps = statistics.median(r["rps"] for r in runs[n])
        lines.append(f"| {n} | {rps:,.0f} | {rps / ref:.2f} | {statistics.median(r['mean_us'] for r in runs[n]):,.0f} | "
                     f"{sum(r['failed'] for r in runs[n])} | {mem[n]:.2f} |")
    lines += ["", f"switchyard, idle HTTP/1.1 keep-alive connection in the same run: {h1:.2f} KiB.", ""]
    text = "\n".join(lines)
    print(text)
    open(os.path.join(HERE, "h2_results.md"), "w").write("# HTTP/2 benchmark (tests/bench/h2_bench.py)\n\n" + text)


if __name__ == "__main__":
    main()
