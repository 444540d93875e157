#!/usr/bin/env python3
"""Makes docs/dashboard.png: a 100-second scenario through the real switchyard, scraped by a real
Prometheus (Debian's package), rendered with render_preview.py (Grafana is not packaged for Debian 12).

Scenario: services orders (3 instances) and catalog (2), health checks, retries, outlier detection;
steady traffic from 6 clients; at 30 s one orders instance dies, at 60 s it comes back; from 45 s a
catalog instance answers 503 one time in three.
    /usr/bin/python3 deploy/grafana/demo.py [--out docs/dashboard.png] [--seconds 100]
"""
import argparse
import os
import random
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)
os.environ.setdefault("SWITCHYARD_BIN", os.path.join(ROOT, "build", "switchyard"))
from harness import Backend, Client, Proxy, respond, wait_until  # noqa: E402
import render_preview  # noqa: E402
from test_observability import start_prometheus  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "dashboard.png"))
    ap.add_argument("--seconds", type=int, default=100)
    a = ap.parse_args()
    state = {"flaky": False}

    def handler(name, flaky=False):
        def h(conn, req, b):
            if req.target == "/health":
                respond(conn, 200, b"ok")
                return True
            time.sleep(random.uniform(0.001, 0.02))
            if flaky and state["flaky"] and random.random() < 0.33:
                respond(conn, 503, b"busy")
            else:
                respond(conn, 200, name.encode())
            return True
        return h

    orders = [Backend(handler(f"orders-{i}"), name=f"orders-{i}") for i in range(3)]
    catalog = [Backend(handler("catalog-0"), name="catalog-0"), Backend(handler("catalog-1", True), name="catalog-1")]
    cfg = ["log_level: warn", "services:"]
    for svc, bs in (("orders", orders), ("catalog", catalog)):
        cfg += [f"  {svc}:", "    health_check: { path: /health, interval: 1s, timeout: 500ms }",
                "    retry: { attempts: 2, on: [connect-failure, reset] }", "    instances:"]
        cfg += [f"      - {{ address: {b.address}, id: {b.name} }}" for b in bs]
    import tempfile
    tmp = tempfile.mkdtemp()
    p = Proxy("\n".join(cfg) + "\n", tmpdir=tmp)
    prom, base = start_prometheus(tmp, [f"127.0.0.1:{p.admin[1]}"])
    stop = threading.Event()

    def client(k):
        c = Client(p.addr)
        while not stop.is_set():
            try:
                c.request(path=f"/item/{random.randrange(1000)}", host="orders" if k % 2 else "catalog")
            except (OSError, EOFError):
                c = Client(p.addr)
            time.sleep(0.01)

    ts = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
    for t in ts:
        t.start()
    t0 = time.monotonic()
    victim_port = orders[2].port
    events = [(0.30, "kill"), (0.45, "flaky"), (0.60, "revive")]
    while time.monotonic() - t0 < a.seconds:
        frac = (time.monotonic() - t0) / a.seconds
        while events and frac >= events[0][0]:
            ev = events.pop(0)[1]
            if ev == "kill":
                orders[2].stop()
            elif ev == "flaky":
                state["flaky"] = True
            else:
                orders[2] = Backend(handler("orders-2"), name="orders-2", port=victim_port)
            print(f"{time.monotonic() - t0:5.1f}s {ev}", flush=True)
        time.sleep(0.2)
    stop.set()
    time.sleep(2)
    n = render_preview.render(base, os.path.join(HERE, "switchyard.json"), a.out, a.seconds)
    print(f"{n} series drawn into {a.out}")
    prom.terminate()
    p.stop()


if __name__ == "__main__":
    main()
