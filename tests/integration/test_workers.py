"""workers: N — N event-loop threads sharing the port with SO_REUSEPORT, one registry snapshot,
outcomes flowing back to the main loop, reload and drain reaching every worker."""
import os
import re
import signal
import subprocess
import threading

from conftest import holding_backend, service_config
from harness import Client, admin, base_url, get, respond, wait_until


def worker_connections(p):
    text = admin(p.admin, "GET", "/metrics")[1]
    return {int(w): float(v) for w, v in re.findall(r'^switchyard_worker_connections_total\{worker="(\d+)"\} (\S+)$', text, re.M)}


def listening_sockets(port):
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return len([l for l in out.splitlines() if l.strip()])


def test_two_workers_share_the_port_and_both_serve(backends, proxies):
    b = backends()
    p = proxies("workers: 2\nservices:\n" + service_config("svc", [b]))
    assert listening_sockets(p.addr[1]) == 2  # one SO_REUSEPORT socket per worker
    assert len(os.listdir(f"/proc/{p.proc.pid}/task")) >= 3  # main loop + two workers
    for _ in range(200):  # 200 connections: the kernel spreads them by their 4-tuple hash
        assert get(p.addr).status == 200
    per_worker = worker_connections(p)
    assert sorted(per_worker) == [0, 1]
    assert sum(per_worker.values()) >= 200  # (the admin API's connections are not counted here)
    assert all(n > 0 for n in per_worker.values()), per_worker


def test_workers_zero_means_one_per_core(backends, proxies):
    b = backends()
    p = proxies("workers: 0\nservices:\n" + service_config("svc", [b]))
    assert len(worker_connections(p)) == os.cpu_count()
    assert get(p.addr).status == 200


def test_failures_seen_by_workers_open_the_breaker_on_the_main_loop(backends, proxies):
    def failing(conn, req, backend):
        respond(conn, 500, backend.name.encode())

    bad1, bad2 = backends(failing, name="bad1"), backends(failing, name="bad2")
    p = proxies("workers: 2\nservices:\n" + service_config(
        "svc", [bad1, bad2], "circuit_breaker: { failure_threshold: 4, open_for: 60s, on: [\"500\"] }\n"
        "outlier_detection: { consecutive_failures: 1000 }"))
    # Requests on many connections, so both workers see failures; the streak is counted across them.
    statuses = [get(p.addr).status for _ in range(8)]
    assert statuses == [500] * 8
    line = p.wait_log("circuit breaker open: svc/")
    opened = [l for l in p.lines if "circuit breaker open: svc/" in l]
    assert len(opened) == 1, opened  # max_ejection_percent (50 %): the other one stays in
    wait_until(lambda: re.search(r'switchyard_circuit_breaker_open\{[^}]*\} 1', admin(p.admin, "GET", "/metrics")[1]),
               5, what="breaker gauge")
    open_one = "bad1" if "svc/bad1" in opened[0] or bad1.address in opened[0] else "bad2"
    states = {i["id"]: i["circuit_breaker"] for i in admin(p.admin, "GET", "/v1/services/svc")[1]["instances"]}
    assert sorted(states.values()) == ["closed", "open"]
    # Every worker now keeps away from the open one (the breaker state is shared, not per worker).
    answered = {get(p.addr).body.decode() for _ in range(20)}
    assert len(answered) == 1 and open_one not in answered, (answered, open_one)


def test_reload_and_registrations_reach_every_worker(backends, proxies):
    a, b = backends(name="a"), backends(name="b")
    p = proxies("workers: 2\nservices:\n" + service_config("svc", [a]))
    for _ in range(20):
        assert get(p.addr).body.startswith(b"a ")
    # A registration: its answer means every worker routes to it (one snapshot for all).
    admin(p.admin, "PUT", "/v1/services/other/instances/b1", {"address": b.address})
    for _ in range(40):
        assert get(p.addr, host="other").body.startswith(b"b ")
    # A reload that moves svc to b: every new connection, whichever worker takes it, sees it.
    p.write_config("workers: 2\nservices:\n" + service_config("svc", [b]))
    p.send_signal(signal.SIGHUP)
    p.wait_log("config reloaded")
    wait_until(lambda: get(p.addr).body.startswith(b"b "), 5, what="the reloaded route")
    assert all(get(p.addr).body.startswith(b"b ") for _ in range(40))


def test_drain_waits_for_requests_on_every_worker(backends, proxies):
    b, release = holding_backend(backends, body=b"done")
    p = proxies("workers: 2\nshutdown_timeout: 10s\nservices:\n" + service_config("svc", [b]))
    clients = [Client(p.addr) for _ in range(8)]  # spread over both workers
    results = [None] * len(clients)

    def go(i):
        results[i] = clients[i].request()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    wait_until(lambda: len(b.requests) == len(clients), 5, what="every request at the backend")
    p.send_signal(signal.SIGTERM)
    p.wait_log("shutting down")
    release.set()
    for t in threads:
        t.join(10)
    assert [r.status for r in results] == [200] * len(clients)
    assert all(r.body == b"done" for r in results)
    assert p.proc.wait(10) == 0


def test_registry_churn_under_load_on_two_workers(backends, proxies):
    """Instances come and go (snapshots switch, departed runtimes and their metric series are freed
    on whichever thread lets go last) while two workers carry load and /metrics is scraped: no
    error, no crash; under the ThreadSanitizer pass, no race."""
    stable = backends(name="stable")
    extra = backends(name="extra")
    p = proxies("workers: 2\nservices:\n" + service_config("svc", [stable]))
    wrk = subprocess.Popen(["wrk", "-t2", "-c8", "-d4s", "-H", "Host: svc", f"{base_url(p)}/"],
                           stdout=subprocess.PIPE, text=True)
    rounds = 0
    while wrk.poll() is None and rounds < 400:  # bounded: at most 400 register/deregister rounds
        iid = f"e{rounds % 5}"
        assert admin(p.admin, "PUT", f"/v1/services/svc/instances/{iid}", {"address": extra.address})[0] == 201
        assert "switchyard_build_info" in admin(p.admin, "GET", "/metrics")[1]
        assert admin(p.admin, "DELETE", f"/v1/services/svc/instances/{iid}")[0] == 204
        rounds += 1
    out = wrk.communicate(timeout=30)[0]
    total = int(re.search(r"(\d+) requests in", out).group(1))
    assert total > 0 and "Non-2xx" not in out and "Socket errors" not in out, out
    assert rounds >= 10
    # Every departed instance's series are gone once the workers have moved on.
    wait_until(lambda: 'instance="e' not in admin(p.admin, "GET", "/metrics")[1], 5, what="departed series gone")
