#!/usr/bin/env python3
"""HTTP/2 from clients: switchyard against HAProxy and nginx, side by side in one run (issue 24).
Run it with tests/bench/run.sh --h2 (installs what is missing, builds the release binary).

Every contender takes HTTP/2 in front of the same two HTTP/1.1 nginx upstreams as
tests/bench/bench.py, one worker/thread each: with prior knowledge on a plain port (switchyard by
the preface, HAProxy `proto h2`, nginx `listen … http2`) and over TLS by ALPN `h2` (the same ECDSA
P-256 certificate for all three, made with `openssl req`). Measured, interleaved A B C per round,
medians:
  - requests/s and p99 time per request (h2load's per-request log), in two shapes: -c10 -m10
    (10 connections × 10 streams) and -c1 -m100 (one connection, 100 streams), plain and TLS;
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
from tls_bench import make_certificate  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class H2Contender(Contender):
    """HTTP/2 on a plain port (prior knowledge), or over TLS by ALPN when `pem` is given."""

    def __init__(self, name, work, b1, b2, pem=None):
        super().__init__(name, work, b1, b2, 1, tag="-h2tls" if pem else "-h2")
        self.pem = pem

    def adjust(self, text):
        if self.name == "switchyard":
            if self.pem:  # ALPN offers h2 first by default
                text = text.replace(f"listen: 127.0.0.1:{self.port}",
                                    f"listen:\n  - address: 127.0.0.1:{self.port}\n"
                                    f"    tls: {{ certificates: [ {{ cert: {self.pem} }} ] }}")
            return text + "routes:\n  - { service: bench }\n"  # whatever :authority h2load sends
        if self.name == "haproxy":
            bind = f"ssl crt {self.pem} alpn h2,http/1.1" if self.pem else "proto h2"
            return text.replace(f"bind 127.0.0.1:{self.port}", f"bind 127.0.0.1:{self.port} {bind}")
        if self.pem:
            return text.replace(f"listen 127.0.0.1:{self.port} reuseport;",
                                f"listen 127.0.0.1:{self.port} reuseport ssl http2;\n    ssl_certificate {self.pem};\n"
                                f"    ssl_certificate_key {self.pem};")
        return text.replace(f"listen 127.0.0.1:{self.port} reuseport;", f"listen 127.0.0.1:{self.port} reuseport http2;")

    @property
    def url(self):
        return f"{'https' if self.pem else 'http'}://{self.addr}/"


SHAPES = (("-c10 -m10", 10, 10), ("-c1 -m100", 1, 100))


def h2load(c, n, conns, streams):
    log = os.path.join(c.work, f"h2load-{c.name}{c.tag}.log")
    out = subprocess.run(["h2load", "-n", str(n), "-c", str(conns), "-m", str(streams), "-H", ":authority: bench",
                          f"--log-file={log}", c.url], capture_output=True, text=True, timeout=600).stdout
    rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    ok = int(re.search(r"status codes: (\d+) 2xx", out).group(1))  # answered 2xx: an error page is a failure
    # The log: one line per request, "start(µs since the run began) status duration(µs)".
    times = sorted(int(line.split()[2]) for line in open(log) if len(line.split()) == 3)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] if times else float("nan")
    return {"rps": rps, "p99_us": p99, "failed": n - ok}


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
    ap.add_argument("--idle", type=int, default=9000)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.requests, a.idle = 1, 20000, 1000
    work = bench.workdir("switchyard-h2bench-")
    pem = make_certificate(work)
    ports, backends = bench.start_upstreams(work)
    names = ("switchyard", "haproxy", "nginx")
    cs = {(n, tls): H2Contender(n, work, ports[0], ports[1], pem if tls else None).start() for tls in (False, True)
          for n in names}
    rows = [(tls, shape) for tls in (False, True) for shape in SHAPES]
    try:
        runs = {(n, tls, shape[0]): [] for n in names for tls, shape in rows}
        for _ in range(a.rounds):
            for tls, (label, conns, streams) in rows:
                for n in names:
                    runs[(n, tls, label)].append(h2load(cs[(n, tls)], a.requests, conns, streams))
        mem = {n: idle_h2_memory(cs[(n, False)], a.idle) for n in names}
    finally:
        for c in cs.values():
            c.stop()
    plain = Contender("switchyard", work, ports[0], ports[1], 1, tag="-h1").start()
    try:
        h1 = bench.idle_memory(plain, a.idle)
    finally:
        plain.stop()
        for b in backends:
            b.terminate()
    lines = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores; h2load -n {a.requests}, "
             f"{a.rounds} interleaved rounds, medians; one worker/thread each; TLS: ECDSA P-256, ALPN h2.", "",
             "| proxy | transport | h2load | req/s | vs HAProxy | p99 ms | vs HAProxy | failed |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for tls, (label, _, _) in rows:
        ref = {k: statistics.median(r[k] for r in runs[("haproxy", tls, label)]) for k in ("rps", "p99_us")}
        for n in names:
            rps = statistics.median(r["rps"] for r in runs[(n, tls, label)])
            p99 = statistics.median(r["p99_us"] for r in runs[(n, tls, label)])
            lines.append(f"| {n} | {'TLS' if tls else 'plain'} | `{label}` | {rps:,.0f} | {rps / ref['rps']:.2f} | "
                         f"{p99 / 1000:.1f} | {p99 / ref['p99_us']:.2f} | {sum(r['failed'] for r in runs[(n, tls, label)])} |")
    lines += ["", f"Memory per idle HTTP/2 connection ({a.idle} clients, plain): " +
              ", ".join(f"{n} {mem[n]:.2f} KiB" for n in names) +
              f"; switchyard's idle HTTP/1.1 keep-alive connection in the same run: {h1:.2f} KiB.", ""]
    text = "\n".join(lines)
    print(text)
    open(os.path.join(HERE, "h2_results.md"), "w").write("# HTTP/2 benchmark (tests/bench/h2_bench.py)\n\n" + text)


if __name__ == "__main__":
    main()
