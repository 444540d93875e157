#!/usr/bin/env python3
"""The registry at scale (issue 14's figures), one command:
    /usr/bin/python3 tests/bench/registry_scale.py [--quick]
  - registrations/s sustained and acknowledgement latency (p50/p99), with 10 / 10,000 / 100,000
    instances registered, persistence off and on (wrk with tests/bench/register.lua, 16 keep-alive
    admin connections, 5 s);
  - main-loop CPU per registration (the process's CPU time over the run / registrations): the cost that
    must not grow with the registry;
  - proxy req/s and p99 (wrk, 16 connections, nginx upstream) for 10 s without, then during, a
    registration storm, same run;
  - (--storm-only runs just the storm);
  - one service of 100 vs 10,000 instances, 100 of them registered again and again (the same
    document, or a new address each time) by 8 admin connections: the work per change must not
    grow with the size of its service (--big-only runs just this);
  - start-up time with 100,000 instances in the snapshot + journal.
Release build (SWITCHYARD_BIN, default build-release/switchyard); default workers (one per core).
Prints a markdown table (also written to tests/bench/registry_results.md)."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
os.environ.setdefault("SWITCHYARD_BIN", os.path.join(HERE, "..", "..", "build-release", "switchyard"))
from harness import Proxy, admin, wait_until  # noqa: E402
from upstream import start_nginx_backend  # noqa: E402

QUICK = "--quick" in sys.argv
LUA = os.path.join(HERE, "register.lua")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_registrations(p, seconds, service="bench", services=1, ids=1000, connections=16, extra_env=None):
    env = dict(os.environ, SY_SERVICE=service, SY_SERVICES=str(services), SY_IDS=str(ids), SY_ADDRESS="127.0.0.1:9",
               **(extra_env or {}))
    return subprocess.Popen(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", LUA,
                             f"http://{p.admin[0]}:{p.admin[1]}/"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def parse_wrk(out):
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))

    def lat(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]

    return rate, total, lat(50), lat(99)


def total_instances(p):
    return sum(s["instances"] for s in admin(p.admin, "GET", "/v1/services")[1]["services"])


def preload(p, n):
    """Registers n instances (over several services: at most 10,000 each) and waits for them."""
    if n <= 0:
        return
    services = max(1, (n + 4999) // 5000)
    w = wrk_registrations(p, 600, service="pre", services=services, ids=n, connections=32)
    try:
        wait_until(lambda: total_instances(p) >= n, 600, interval=0.5, what=f"{n} instances")
    finally:
        w.terminate()
        w.communicate()


def settle(p, quiet=0.02, period=0.25, limit=60):
    """Waits until the proxy is idle again (its CPU time grows by less than `quiet` s per `period`),
    so a run does not measure the tail of the preload."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(p.proc.pid)
    while time.monotonic() < deadline:
        time.sleep(period)
        now = cpu_seconds(p.proc.pid)
        if now - last < quiet:
            return
        last = now


def registration_run(n, persist, tmp):
    snap = os.path.join(tmp, f"reg-{n}-{persist}.json")
    text = "log_level: warn\n" + (f"registry: {{ snapshot: {snap} }}\n" if persist else "")
    p = Proxy(text, tmpdir=tmp)
    try:
        # The measured registrations go to one service of 10 instances in every run, so what
        # differs between runs is only how much else is registered.
        preload(p, n - 10)
        settle(p)
        seconds = 2 if QUICK else 5
        c0 = cpu_seconds(p.proc.pid)
        w = wrk_registrations(p, seconds, ids=10)
        out = w.communicate()[0]
        cpu = cpu_seconds(p.proc.pid) - c0
        rate, total, p50, p99 = parse_wrk(out)
        return {"instances": total_instances(p), "rate": rate, "p50": p50, "p99": p99, "cpu_us": cpu / total * 1e6}
    finally:
        p.stop()


def big_service_run(size, persist, tmp, fresh=False, lb=None):
    """Re-registrations (fresh=False: the same document again; True: a new address each time, a real
    change) of 100 instances of one service that holds `size`, 8 admin connections: the work per
    change must not grow with the size of its service."""
    snap = os.path.join(tmp, f"big-{size}-{persist}-{fresh}-{lb}.json")
    text = "log_level: warn\n" + (f"registry: {{ snapshot: {snap} }}\n" if persist else "")
    if lb:
        text += f"services:\n  big: {{ lb: {lb} }}\n"
    p = Proxy(text, tmpdir=tmp)
    try:
        w = wrk_registrations(p, 600, service="big", ids=size, connections=32)
        try:
            wait_until(lambda: total_instances(p) >= size, 600, interval=0.5, what=f"{size} instances")
        finally:
            w.terminate()
            w.communicate()
        settle(p)
        seconds = 2 if QUICK else 5
        c0 = cpu_seconds(p.proc.pid)
        env = {"SY_FRESH": "1"} if fresh else {}
        w = wrk_registrations(p, seconds, service="big", ids=100, connections=8, extra_env=env)
        out = w.communicate()[0]
        cpu = cpu_seconds(p.proc.pid) - c0
        rate, total, p50, p99 = parse_wrk(out)
        return {"size": size, "rate": rate, "p50": p50, "p99": p99, "cpu_us": cpu / total * 1e6, "lb": lb or "round_robin"}
    finally:
        p.stop()


def wrk_traffic(p, seconds):
    out = subprocess.run(["wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", "-H", "Host: web",
                          f"http://{p.addr[0]}:{p.addr[1]}/"], capture_output=True, text=True).stdout
    return parse_wrk(out)


def storm_run(tmp, backend_port):
    snap = os.path.join(tmp, "storm.json")
    p = Proxy(f"log_level: warn\nregistry: {{ snapshot: {snap} }}\nservices:\n  web:\n    instances:\n"
              f"      - {{ address: 127.0.0.1:{backend_port} }}\n", tmpdir=tmp)
    try:
        seconds = 4 if QUICK else 10
        calm = wrk_traffic(p, seconds)
        # New registrations spread over 100 services growing towards 20,000 instances, each a real
        # change (a new address when an id comes round again).
        storm = wrk_registrations(p, seconds + 1, service="storm", services=100, ids=20000, extra_env={"SY_FRESH": "1"})
        during = wrk_traffic(p, seconds)
        reg = parse_wrk(storm.communicate()[0])
        return calm, during, reg
    finally:
        p.stop()


def startup_run(tmp, n):
    snap = os.path.join(tmp, "big.json")
    # Half the instances folded into the snapshot, half still in the journal.
    p = Proxy(f"log_level: warn\nregistry: {{ snapshot: {snap}, journal_max: 8MiB }}\n", tmpdir=tmp)
    try:
        preload(p, n)
    finally:
        p.stop()
    t0 = time.monotonic()
    p = Proxy(f"log_level: info\nregistry: {{ snapshot: {snap}, journal_max: 8MiB }}\n", tmpdir=tmp)
    ready = time.monotonic() - t0
    line = next(l for l in p.lines if "registry snapshot loaded" in l)
    loaded = total_instances(p)
    p.stop()
    journals = [f for f in os.listdir(tmp) if f.startswith("big.json.journal.")]
    return ready, line, loaded, journals


def main():
    tmp = tempfile.mkdtemp()
    rows = []
    sizes = [10, 10000] if QUICK else [10, 10000, 100000]
    if "--big-only" in sys.argv or "--storm-only" in sys.argv:
        sizes = []
    for persist in (False, True):
        for n in sizes:
            r = registration_run(n, persist, tmp)
            rows.append((n, persist, r))
            print(f"{n:>7} instances, persistence {'on ' if persist else 'off'}: {r['rate']:,.0f} registrations/s, "
                  f"ack p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms, {r['cpu_us']:.1f} CPU-us per registration "
                  f"({r['instances']} registered)", flush=True)
    big = []
    for persist in ((False, True) if "--storm-only" not in sys.argv else ()):
        for fresh in (False, True):
            for size in (100, 10000):
                r = big_service_run(size, persist, tmp, fresh)
                big.append((persist, fresh, r))
                print(f"one service of {size:>6}: re-registering 100 ({'new address' if fresh else 'same document'}), "
                      f"persistence {'on ' if persist else 'off'}: {r['rate']:,.0f}/s, ack p99 {r['p99']:.2f} ms, "
                      f"{r['cpu_us']:.1f} CPU-us each", flush=True)
    if "--storm-only" not in sys.argv:
        # Maglev: a table over every endpoint, rebuilt at most once per 100 ms in a big service.
        for size in (100, 10000):
            r = big_service_run(size, True, tmp, True, lb="maglev")
            big.append((True, True, r))
            print(f"one maglev service of {size:>6}: re-registering 100 (new address), persistence on: {r['rate']:,.0f}/s, "
                  f"ack p99 {r['p99']:.2f} ms, {r['cpu_us']:.1f} CPU-us each", flush=True)
    if "--big-only" in sys.argv:
        return
    nginx, work, port = start_nginx_backend()
    try:
        calm, during, reg = storm_run(tmp, port)
    finally:
        nginx.terminate()
    print(f"proxy without a storm: {calm[0]:,.0f} req/s, p99 {calm[3]:.2f} ms; during a storm of {reg[0]:,.0f} "
          f"new registrations/s over 100 services (persistence on): {during[0]:,.0f} req/s, p99 {during[3]:.2f} ms", flush=True)
    if "--storm-only" in sys.argv:
        return
    n_start = 20000 if QUICK else 100000
    ready, line, loaded, journals = startup_run(tmp, n_start)
    print(f"start-up with {loaded:,} instances in snapshot + journal: ready in {ready:.2f} s ({line.split('loaded from')[1].strip()}); journals: {journals}")
    with open(os.path.join(HERE, "registry_results.md"), "w") as f:
        f.write(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, release build, default workers.\n\n")
        f.write("| instances registered | persistence | registrations/s | ack p50 ms | ack p99 ms | CPU µs per registration |\n|---:|---|---:|---:|---:|---:|\n")
        for n, persist, r in rows:
            f.write(f"| {n:,} | {'on' if persist else 'off'} | {r['rate']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['cpu_us']:.1f} |\n")
        f.write("\n| one service of | lb | re-registering 100 | persistence | registrations/s | ack p99 ms | CPU µs each |\n"
                "|---:|---|---|---|---:|---:|---:|\n")
        for persist, fresh, r in big:
            f.write(f"| {r['size']:,} | {r['lb']} | {'new address' if fresh else 'same document'} | {'on' if persist else 'off'} | "
                    f"{r['rate']:,.0f} | {r['p99']:.2f} | {r['cpu_us']:.1f} |\n")
        f.write(f"\n| proxy (wrk -c16, nginx upstream) | req/s | p99 ms |\n|---|---:|---:|\n")
        f.write(f"| without a registration storm | {calm[0]:,.0f} | {calm[3]:.2f} |\n")
        f.write(f"| during a storm of {reg[0]:,.0f} new registrations/s over 100 services, persistence on | {during[0]:,.0f} | {during[3]:.2f} |\n")
        f.write(f"\nStart-up with {loaded:,} instances in the snapshot + journal: ready {ready:.2f} s after exec.\n")


if __name__ == "__main__":
    main()
