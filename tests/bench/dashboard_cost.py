#!/usr/bin/env python3
"""What the dashboard costs the registry (issue 26, "Performance"):
  - a registration storm (wrk, tests/bench/register.lua) alone, and with the page open in 10
    "browsers" (each: an event-stream reader that reads, plus the page's reads every 5 s: the
    overview and one page of the storm's service), alternated so the machine's drift cancels;
    registrations/s and CPU-seconds per 10,000 registrations, medians;
  - the event stream with 1,000 readers connected: events encoded per registry change (the
    proxy's own counter, switchyard_events_encoded_total), which must be one, whatever the readers.
Run: /usr/bin/python3 tests/bench/dashboard_cost.py  (SWITCHYARD_BIN, default build-release/switchyard)"""
import os
import re
import socket
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
os.environ.setdefault("SWITCHYARD_BIN", os.path.join(HERE, "..", "..", "build-release", "switchyard"))
from harness import Proxy, admin  # noqa: E402
from registry_scale import cpu_seconds, parse_wrk, wrk_registrations  # noqa: E402


def sse_reader(addr, stop, counter):
    s = socket.create_connection(tuple(addr))
    s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: admin\r\nAccept: text/event-stream\r\n\r\n")
    s.settimeout(0.5)
    while not stop.is_set():
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        if not data:
            break
        counter[0] += data.count(b"\nevent: ")
    s.close()


def page_reader(addr, stop):
    while not stop.is_set():
        admin(addr, "GET", "/v1/dashboard")
        admin(addr, "GET", "/v1/dashboard/services/bench?limit=100")
        stop.wait(5)


def metric(p, name):
    _, text, _ = admin(p.admin, "GET", "/metrics")
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def storm(p, seconds, pages):
    stop = threading.Event()
    counter = [0]
    threads = [threading.Thread(target=sse_reader, args=(p.admin, stop, counter)) for _ in range(pages)]
    threads += [threading.Thread(target=page_reader, args=(p.admin, stop)) for _ in range(pages)]
    for t in threads:
        t.start()
    cpu0 = cpu_seconds(p.proc.pid)
    w = wrk_registrations(p, seconds)
    out, _ = w.communicate()
    cpu = cpu_seconds(p.proc.pid) - cpu0
    stop.set()
    for t in threads:
        t.join()
    rate, total, p50, p99 = parse_wrk(out)
    return rate, cpu / total * 10000, p99


def main():
    # (admin.max_connections: room for the 1,000 readers below.)
    p = Proxy("log_level: warn\nadmin:\n  listen: 127.0.0.1:0\n  max_connections: 2000\n")
    try:
        runs = {0: [], 10: []}
        for _ in range(3):
            for pages in (0, 10):
                runs[pages].append(storm(p, 5, pages))
        for pages, rs in runs.items():
            print(f"{pages:2d} pages open: registrations/s median {statistics.median(r[0] for r in rs):.0f}, "
                  f"CPU-s per 10,000 median {statistics.median(r[1] for r in rs):.3f}, p99 median {statistics.median(r[2] for r in rs):.2f} ms "
                  f"(runs: {', '.join(f'{r[0]:.0f}' for r in rs)})")
        base, loaded = statistics.median(r[0] for r in runs[0]), statistics.median(r[0] for r in runs[10])
        print(f"ratio with 10 pages / without: {loaded / base:.3f}")
        # 1,000 readers: one encode per event.
        stop = threading.Event()
        counter = [0]
        readers = [threading.Thread(target=sse_reader, args=(p.admin, stop, counter)) for _ in range(1000)]
        for t in readers:
            t.start()
        deadline = time.monotonic() + 60
        while metric(p, "switchyard_event_watchers") < 1000 and time.monotonic() < deadline:
            time.sleep(0.1)
        watchers = metric(p, "switchyard_event_watchers")
        enc0 = metric(p, "switchyard_events_encoded_total")
        n = 200
        for i in range(n):
            admin(p.admin, "PUT", f"/v1/services/fan/instances/f{i}", {"address": "127.0.0.1:9", "ttl": "0s"})
        deadline = time.monotonic() + 60
        while counter[0] < n * watchers and time.monotonic() < deadline:
            time.sleep(0.1)
        enc = metric(p, "switchyard_events_encoded_total") - enc0
        print(f"{watchers:.0f} readers, {n} registrations: {enc:.0f} events encoded ({enc / n:.2f} per change), "
              f"{counter[0]} delivered ({counter[0] / n:.0f} per change)")
        stop.set()
        for t in readers:
            t.join()
    finally:
        p.stop()


if __name__ == "__main__":
    main()
