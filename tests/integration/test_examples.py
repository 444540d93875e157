"""The example self-registering services (deploy/examples/) really run behind switchyard:
they register, serve traffic through the proxy, and on SIGTERM leave with no failed request."""
import os
import signal
import subprocess
import threading

from harness import ROOT, Client, admin, free_port, wait_until

PY = "/usr/bin/python3"
EXAMPLES = os.path.join(ROOT, "deploy", "examples")


def start(script, port, p, iid):
    return subprocess.Popen([PY, os.path.join(EXAMPLES, script), "--port", str(port), "--name", "orders", "--id", iid,
                             "--admin", f"http://{p.admin[0]}:{p.admin[1]}", "--ttl", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_aiohttp_and_tornado_services_register_serve_and_leave_cleanly(proxies):
    p = proxies("")
    procs = {"aio": start("aiohttp_service.py", free_port(), p, "aio"),
             "tornado": start("tornado_service.py", free_port(), p, "tornado")}
    try:
        def registered():
            st, body, _ = admin(p.admin, "GET", "/v1/services/orders")
            return st == 200 and {i["id"] for i in body["instances"]} == {"aio", "tornado"}

        wait_until(registered, 20, what="both example services registered")
        _, inst, _ = admin(p.admin, "GET", "/v1/services/orders/instances/aio")
        assert inst["meta"] == {"framework": "aiohttp"}

        results, stop = [], threading.Event()

        def traffic():
            c = Client(p.addr)
            while not stop.is_set():
                r = c.request(path="/orders/1", host="orders")
                results.append((r.status, r.json()["instance"] if r.status == 200 else None))
            c.close()

        t = threading.Thread(target=traffic)
        t.start()
        wait_until(lambda: {i for s, i in results} >= {"aio", "tornado"}, 10, what="traffic to both")
        # Heartbeats keep them past their 3 s TTL.
        n = len(results)
        wait_until(lambda: len(results) > n + 50, 10, what="more traffic")
        procs["aio"].send_signal(signal.SIGTERM)
        assert procs["aio"].wait(15) == 0
        mark = len(results)
        wait_until(lambda: len(results) > mark + 50, 10, what="traffic after aiohttp left")
        stop.set()
        t.join(10)
        failures = [r for r in results if r[0] != 200]
        assert failures == [], failures[:5]
        assert all(i == "tornado" for _, i in results[mark:])
        out = procs["aio"].stdout.read()
        assert "deregistered (204)" in out, out
        procs["tornado"].send_signal(signal.SIGTERM)
        assert procs["tornado"].wait(15) == 0
        assert "deregistered (204)" in procs["tornado"].stdout.read()
        st, body, _ = admin(p.admin, "GET", "/v1/services/orders")
        assert st == 404  # the last instance took the registry-only service with it
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
