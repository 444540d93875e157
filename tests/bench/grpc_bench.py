#!/usr/bin/env python3
"""gRPC end to end: unary calls through switchyard and through HAProxy, side by side in one run
(issue 25). Run it with tests/bench/run.sh --grpc (installs what is missing, builds the release
binary).

Both proxies take HTTP/2 with prior knowledge from the client and speak HTTP/2 (h2c) to the same
two grpcio servers (Debian's python3-grpcio, grpc.aio, one process each, a generic unary echo
handler on raw bytes): switchyard `protocol: h2c`, HAProxy `bind … proto h2` and `server … proto
h2`; round robin, one worker/thread each, no active health checks on either side.

The client is h2load with a gRPC-framed body (`-d`: one 5-byte-prefixed message, content-type
application/grpc, te: trailers): h2load -c10 -m10 (10 connections × 10 streams = 100 concurrent
calls). Measured, interleaved A B per round, medians: calls/s, p99 time per call (h2load's
per-request log), and the most upstream connections open to one instance during the run (`ss`,
sampled). Before the runs one grpcio call through each proxy must come back OK with the echoed
message and the instance's trailer: the h2load numbers are of calls that work.
Writes tests/bench/grpc_results.md."""
import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402
from bench import BIN, Contender, port_open  # noqa: E402
from upstream import free_port, wait_until  # noqa: E402

SERVER = r'''
import asyncio, sys, grpc
async def unary(req, ctx):
    await ctx.send_initial_metadata((("x-served-by", sys.argv[1]),))
    ctx.set_trailing_metadata((("x-trailer", "t"),))
    return req
async def main():
    s = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1000)])
    s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)}),))
    s.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await s.start()
    await s.wait_for_termination()
asyncio.run(main())
'''


def grpc_frame(payload):
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


class GrpcContender(Contender):
    """bench.Contender (port, addr, stop) with configs of its own: HTTP/2 on both sides."""

    def __init__(self, name, work, ports):
        super().__init__(name, work, ports[0], ports[1], 1, tag="-grpc")
        self.ports = ports

    def start(self):
        d = os.path.join(self.work, self.name)
        os.makedirs(d, exist_ok=True)
        if self.name == "switchyard":
            cfg = os.path.join(d, "sy.yaml")
            open(cfg, "w").write(
                f"listen: 127.0.0.1:{self.port}\nadmin: {{ listen: 127.0.0.1:0 }}\nworkers: 1\nlog_level: warn\n"
                "services:\n  bench:\n    protocol: h2c\n    lb: round_robin\n    instances:\n" +
                "".join(f"      - {{ address: 127.0.0.1:{p} }}\n" for p in self.ports) +
                "routes:\n  - { service: bench }\n")
            self.proc = subprocess.Popen([BIN, "-c", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            cfg = os.path.join(d, "haproxy.cfg")
            open(cfg, "w").write(
                "global\n    nbthread 1\n    maxconn 9900\n    log stderr format raw local0 emerg\n"
                "defaults\n    mode http\n    timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n"
                "    option http-keep-alive\n    http-reuse always\n"
                f"frontend fe\n    bind 127.0.0.1:{self.port} proto h2\n    default_backend be\n"
                "backend be\n    balance roundrobin\n" +
                "".join(f"    server s{i} 127.0.0.1:{p} proto h2\n" for i, p in enumerate(self.ports)))
            self.proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), 20, what=f"{self.name} listening")
        return self

    def check(self):
        """One real gRPC call through this proxy: the echo, the instance's head and trailer."""
        import grpc
        with grpc.insecure_channel(self.addr, options=[("grpc.default_authority", "bench")]) as ch:
            resp, call = ch.unary_unary("/bench.Echo/Unary").with_call(b"check", timeout=30)
            assert resp == b"check" and ("x-trailer", "t") in call.trailing_metadata(), (self.name, resp)


def upstream_connections(port):
    """Established connections to an instance's port (only the proxy under test connects to it)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"], capture_output=True, text=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


def h2load(c, n, body, conns, streams):
    log = os.path.join(c.work, f"h2load-{c.name}.log")
    most = {p: 0 for p in c.ports}
    done = threading.Event()

    def sample():
        while not done.wait(0.1):
            for p in c.ports:
                most[p] = max(most[p], upstream_connections(p))
    t = threading.Thread(target=sample)
    t.start()
    try:
        out = subprocess.run(["h2load", "-n", str(n), "-c", str(conns), "-m", str(streams), "-d", body,
                              "-H", ":authority: bench", "-H", "content-type: application/grpc", "-H", "te: trailers",
                              f"--log-file={log}", f"http://{c.addr}/bench.Echo/Unary"],
                             capture_output=True, text=True, timeout=600).stdout
    finally:
        done.set()
        t.join()
    rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    ok = int(re.search(r"status codes: (\d+) 2xx", out).group(1))
    times = sorted(int(line.split()[2]) for line in open(log) if len(line.split()) == 3)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] if times else float("nan")
    return {"rps": rps, "p99_us": p99, "failed": n - ok, "conns": max(most.values())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=30000)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.calls = 1, 5000
    work = bench.workdir("switchyard-grpcbench-")
    body = os.path.join(work, "call.bin")
    open(body, "wb").write(grpc_frame(b"x" * 64))
    ports = [free_port(), free_port()]
    servers = [subprocess.Popen(["/usr/bin/python3", "-c", SERVER, str(p)]) for p in ports]
    names = ("switchyard", "haproxy")
    cs = {}
    try:
        for p in ports:
            wait_until(lambda: port_open(p), 30, what="grpcio server")
        cs = {n: GrpcContender(n, work, ports).start() for n in names}
        for c in cs.values():
            c.check()
        h2load(cs["switchyard"], 2000, body, 10, 10)  # warm-up: the servers' first calls are slow
        runs = {n: [] for n in names}
        for _ in range(a.rounds):
            for n in names:
                runs[n].append(h2load(cs[n], a.calls, body, 10, 10))
    finally:
        for c in cs.values():
            c.stop()
        for s in servers:
            s.terminate()
    ref = {k: statistics.median(r[k] for r in runs["haproxy"]) for k in ("rps", "p99_us")}
    lines = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores; h2load -n {a.calls} "
             "-c10 -m10 (100 concurrent calls), a 64-byte message per call, gRPC-framed; "
             f"{a.rounds} interleaved rounds, medians; one worker/thread each; two grpcio (grpc.aio) servers, h2c.", "",
             "| proxy | calls/s | vs HAProxy | p99 ms | vs HAProxy | failed | upstream conns per instance (max) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        rps = statistics.median(r["rps"] for r in runs[n])
        p99 = statistics.median(r["p99_us"] for r in runs[n])
        lines.append(f"| {n} | {rps:,.0f} | {rps / ref['rps']:.2f} | {p99 / 1000:.1f} | {p99 / ref['p99_us']:.2f} | "
                     f"{sum(r['failed'] for r in runs[n])} | {max(r['conns'] for r in runs[n])} |")
    text = "\n".join(lines + [""])
    print(text)
    open(os.path.join(HERE, "grpc_results.md"), "w").write("# gRPC benchmark (tests/bench/grpc_bench.py)\n\n" + text)


if __name__ == "__main__":
    main()
