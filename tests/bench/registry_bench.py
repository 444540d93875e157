#!/usr/bin/env python3
"""Registry figures for the closing notes of issue 3 (run: /usr/bin/python3 tests/bench/registry_bench.py):
  - time from a registration's answer to the first request routed to the new instance;
  - registrations per second sustained, with persistence off and on (keep-alive admin clients).
Uses the test harness: the real binary (SWITCHYARD_BIN, default build-release/switchyard)."""
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
os.environ.setdefault("SWITCHYARD_BIN", os.path.join(HERE, "..", "..", "build-release", "switchyard"))
import harness  # noqa: E402
from harness import Backend, Client, Proxy, request_bytes  # noqa: E402
import json  # noqa: E402


def put(c, path, body):
    data = json.dumps(body).encode()
    c.send(request_bytes("PUT", path, "admin", [("Content-Length", str(len(data)))], data))
    return c.reader.read_response()


def time_to_first_route(p, backend, rounds=200):
    samples = []
    a = Client(p.admin)
    c = Client(p.addr)
    for i in range(rounds):
        svc = f"fresh{i}"
        r = put(a, f"/v1/services/{svc}/instances/x", {"address": backend.address})
        assert r.status == 201
        t0 = time.perf_counter()
        r = c.request(host=svc)
        samples.append(time.perf_counter() - t0)
        assert r.status == 200, r.start  # routed on the very next request
    return statistics.median(samples), max(samples)


def registrations_per_second(p, backend, seconds=3.0, clients=4):
    count = [0] * clients
    stop = time.monotonic() + seconds

    def run(k):
        c = Client(p.admin)
        i = 0
        while time.monotonic() < stop:
            r = put(c, f"/v1/services/load/instances/c{k}-{i % 250}", {"address": backend.address})
            assert r.status in (200, 201), r.start
            count[k] += 1
            i += 1

    ts = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(count) / seconds


def main():
    b = Backend()
    import tempfile
    tmp = tempfile.mkdtemp()
    p = Proxy("log_level: warn\n", tmpdir=tmp)
    med, worst = time_to_first_route(p, b)
    print(f"registration answer -> first routed request: median {med*1e6:.0f} us, max {worst*1e6:.0f} us (200 rounds; every first request routed)")
    print(f"registrations/s, memory only: {registrations_per_second(p, b):.0f}")
    p.stop()
    p2 = Proxy(f"log_level: warn\nregistry: {{ snapshot: {tmp}/reg.json }}\n", tmpdir=tmp)
    for clients in (4, 16, 64):
        print(f"registrations/s, persistence on (one fsync per loop turn), {clients} concurrent clients: "
              f"{registrations_per_second(p2, b, clients=clients):.0f}")
    p2.stop()


if __name__ == "__main__":
    main()
