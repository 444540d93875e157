"""The shared registry (registry.backend: etcd) against a real 3-member etcd cluster on loopback:
changes through one proxy routed by another, heartbeats through any proxy, kill -9 of a proxy,
members stopped (one: everything works; two: routing goes on, changes 503, all back afterwards),
compaction while a proxy's watch is down, 10,000 instances synced by a new proxy, a proxy killed
in the middle of a registration stream, self-preservation on what the watch reports, same-id races,
a watch that goes silent without breaking (found by the stall check).

Skips only where etcd is not installed (deploy/install-deps.sh installs etcd-server)."""
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from etcd_cluster import ETCD, EtcdCluster, StallingRelay, b64
from harness import BIN, admin, get, metric, wait_until

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (deploy/install-deps.sh installs etcd-server)")

# Generous: the tests wait for what they wait for; this only bounds a hang.
WAIT = 120


@pytest.fixture
def cluster(tmp_path):
    c = EtcdCluster(str(tmp_path))
    yield c
    c.close()


def shared_config(cluster, members=None, extra="", timeout="2s"):
    eps = [cluster.endpoints[i] for i in (members if members is not None else range(len(cluster.endpoints)))]
    return ("registry:\n  backend: etcd\n  default_ttl: 10m\n  etcd:\n    endpoints: [" + ", ".join(eps) +
            f"]\n    timeout: {timeout}\n" + extra)


def ready(proxy):
    wait_until(lambda: admin(proxy.admin, "GET", "/readyz")[0] == 200, WAIT, 0.02, what="proxy to read the shared registry")
    return proxy


def register(proxy, service, iid, address, ttl="10m", **more):
    body = {"address": address, "ttl": ttl}
    body.update(more)
    return admin(proxy.admin, "PUT", f"/v1/services/{service}/instances/{iid}", body)


def instance_ids(proxy, service):
    status, body, _ = admin(proxy.admin, "GET", f"/v1/services/{service}")
    if status != 200:
        return set()
    return {i["id"] for i in body["instances"]}


def rx_queue(local_port, remote_port):
    """Bytes waiting unread in the receive queue of the loopback TCP connection local_port →
    remote_port (/proc/net/tcp), or None if there is no such connection."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == local_port and int(fields[2].split(":")[1], 16) == remote_port:
                return int(fields[4].split(":")[1], 16)
    return None


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def test_registration_through_a_is_routed_by_b(cluster, proxies, backends):
    """1,000 registrations through A, each looked for on B right after A acknowledged it: all
    arrive; the lag (A's acknowledgement → visible on B) is reported as p50/p99."""
    b = backends()
    a_proxy = ready(proxies(shared_config(cluster)))
    b_proxy = ready(proxies(shared_config(cluster)))
    lags = []
    for i in range(1000):
        status, body, _ = register(a_proxy, "lag", f"i{i}", b.address)
        assert status == 201, body
        t0 = time.monotonic()
        wait_until(lambda: admin(b_proxy.admin, "GET", f"/v1/services/lag/instances/i{i}")[0] == 200, WAIT, 0,
                   what=f"i{i} on B")
        lags.append(time.monotonic() - t0)
    print(f"\nlag A ack -> B visible over 1000 registrations: p50 {percentile(lags, 50) * 1000:.2f} ms, "
          f"p99 {percentile(lags, 99) * 1000:.2f} ms, max {max(lags) * 1000:.2f} ms")
    assert len(cluster.instances()) == 1000
    assert len(instance_ids(b_proxy, "lag")) == 1000
    # Traffic through B reaches the instance registered through A.
    assert get(b_proxy.addr, "/", host="lag").status == 200
    # B's histogram saw the changes arrive (write → applied).
    assert metric(b_proxy, "switchyard_registry_sync_lag_seconds_count") >= 1000
    assert metric(b_proxy, "switchyard_registry_backend_up") == 1


def test_heartbeats_through_b_keep_alive_an_instance_registered_through_a(cluster, proxies, backends):
    b = backends()
    a_proxy = ready(proxies(shared_config(cluster)))
    b_proxy = ready(proxies(shared_config(cluster)))
    assert register(a_proxy, "hb", "h1", b.address, ttl="4s")[0] == 201
    wait_until(lambda: "h1" in instance_ids(b_proxy, "hb"), WAIT, what="h1 on B")
    # Three leases' worth of time, renewed only through B.
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        status, body, _ = admin(b_proxy.admin, "PUT", "/v1/services/hb/instances/h1/heartbeat")
        assert status == 200, body
        time.sleep(0.5)  # the client's heartbeat interval: the pacing is the point here
    assert ("hb", "h1") in cluster.instances()
    assert get(a_proxy.addr, "/", host="hb").status == 200
    # Heartbeats stop: etcd expires the lease and both proxies drop the instance (one instance of
    # its service: not a mass expiry).
    wait_until(lambda: ("hb", "h1") not in cluster.instances(), WAIT, 0.1, what="the lease to run out in etcd")
    wait_until(lambda: "h1" not in instance_ids(a_proxy, "hb") and "h1" not in instance_ids(b_proxy, "hb"), WAIT,
               what="both proxies to drop the expired instance")
    # A heartbeat for the expired instance answers 404: the client registers again.
    assert admin(b_proxy.admin, "PUT", "/v1/services/hb/instances/h1/heartbeat")[0] == 404


def test_drain_and_deregister_through_either_proxy(cluster, proxies, backends):
    b1, b2 = backends(), backends()
    a_proxy = ready(proxies(shared_config(cluster)))
    b_proxy = ready(proxies(shared_config(cluster)))
    assert register(a_proxy, "dd", "x1", b1.address)[0] == 201
    assert register(a_proxy, "dd", "x2", b2.address)[0] == 201
    # B learns of them from its watch (docs/shared-registry.md, "Writes": until then, B answers 404).
    wait_until(lambda: instance_ids(b_proxy, "dd") == {"x1", "x2"}, WAIT, what="B to see x1 and x2")
    assert admin(b_proxy.admin, "PUT", "/v1/services/dd/instances/x1/drain", {"enabled": True})[0] == 200
    wait_until(lambda: admin(a_proxy.admin, "GET", "/v1/services/dd/instances/x1")[1].get("draining") is True, WAIT,
               what="drain seen by A")
    assert cluster.instances()[("dd", "x1")]["draining"] is True
    # Drained through B: A sends nothing more to x1.
    for _ in range(10):
        assert get(a_proxy.addr, "/", host="dd").body.startswith(b2.name.encode() + b" ")
    assert admin(b_proxy.admin, "DELETE", "/v1/services/dd/instances/x1")[0] == 204
    wait_until(lambda: instance_ids(a_proxy, "dd") == {"x2"}, WAIT, what="deregistration seen by A")
    assert set(cluster.instances()) == {("dd", "x2")}


def test_static_instances_stay_local(cluster, proxies, backends):
    b = backends()
    a_proxy = ready(proxies(shared_config(cluster) + f"services:\n  local:\n    instances:\n      - {{ address: {b.address} }}\n"))
    b_proxy = ready(proxies(shared_config(cluster)))
    assert get(a_proxy.addr, "/", host="local").status == 200
    assert get(b_proxy.addr, "/", host="local").status == 404
    assert cluster.instances() == {}


def test_kill_9_of_a_proxy_loses_nothing_acknowledged(cluster, proxies, backends):
    b = backends()
    a_proxy = ready(proxies(shared_config(cluster)))
    b_proxy = ready(proxies(shared_config(cluster)))
    for i in range(200):
        assert register(a_proxy, "k9", f"k{i}", b.address)[0] == 201
    a_proxy.killed = True
    a_proxy.proc.kill()
    a_proxy.proc.wait()
    assert len(cluster.instances()) == 200
    wait_until(lambda: len(instance_ids(b_proxy, "k9")) == 200, WAIT, what="B to hold all 200")
    c_proxy = ready(proxies(shared_config(cluster)))
    assert len(instance_ids(c_proxy, "k9")) == 200
    assert get(c_proxy.addr, "/", host="k9").status == 200


def test_one_member_stopped_everything_works(cluster, proxies, backends):
    b = backends()
    a_proxy = ready(proxies(shared_config(cluster)))
    b_proxy = ready(proxies(shared_config(cluster)))
    assert register(a_proxy, "one", "before", b.address)[0] == 201
    # The first endpoint in both proxies' lists: the member they talk to.
    cluster.stop(0)
    for i in range(20):
        status, body, _ = register(a_proxy, "one", f"o{i}", b.address)
        assert status == 201, body
    wait_until(lambda: len(instance_ids(b_proxy, "one")) == 21, WAIT, what="B to see every registration")
    assert admin(b_proxy.admin, "PUT", "/v1/services/one/instances/o3/heartbeat")[0] == 200
    assert admin(b_proxy.admin, "DELETE", "/v1/services/one/instances/before")[0] == 204
    wait_until(lambda: "before" not in instance_ids(a_proxy, "one"), WAIT, what="A to see the deregistration")
    assert get(b_proxy.addr, "/", host="one").status == 200
    assert metric(a_proxy, "switchyard_registry_backend_up") == 1


def test_a_frozen_member_is_left_for_another(cluster, proxies, backends):
    """Member 0 hangs (SIGSTOP: connections stay open, nothing is answered): the proxies' probe
    times out, moves to the next member, and the watch follows it; changes keep flowing."""
    b = backends()
    a_proxy = ready(proxies(shared_config(cluster, members=[1, 2])))
    b_proxy = ready(proxies(shared_config(cluster)))  # talks to member 0 first
    assert register(a_proxy, "frz", "before", b.address)[0] == 201
    wait_until(lambda: "before" in instance_ids(b_proxy, "frz"), WAIT, what="B to see 'before'")
    cluster.pause(0)
    try:
        assert register(a_proxy, "frz", "during", b.address)[0] == 201
        wait_until(lambda: "during" in instance_ids(b_proxy, "frz"), WAIT, 0.05, what="B's watch to move off the frozen member")
        status, body, _ = register(b_proxy, "frz", "through-b", b.address)
        assert status == 201, body
        wait_until(lambda: "through-b" in instance_ids(a_proxy, "frz"), WAIT, what="A to see B's registration")
    finally:
        cluster.resume(0)


def test_quorum_lost_routing_continues_changes_refused_then_all_back(cluster, proxies, backends):
    b = backends()
    a_proxy = ready(proxies(shared_config(cluster)))
    b_proxy = ready(proxies(shared_config(cluster)))
    acked = set()
    for i in range(10):
        assert register(a_proxy, "q", f"q{i}", b.address)[0] == 201
        acked.add(f"q{i}")
    wait_until(lambda: instance_ids(b_proxy, "q") == acked, WAIT, what="B to see the first registrations")
    cluster.stop(1)
    cluster.stop(2)
    for p in (a_proxy, b_proxy):
        wait_until(lambda: metric(p, "switchyard_registry_backend_up") == 0, WAIT, 0.1, what="the proxy to notice etcd is away")
    # Static stability: both proxies route on the registry they last saw and stay ready.
    for p in (a_proxy, b_proxy):
        assert get(p.addr, "/", host="q").status == 200
        status, body, _ = admin(p.admin, "GET", "/readyz")
        assert status == 200 and body["registry"].startswith("etcd: unavailable"), body
    status, body, _ = register(a_proxy, "q", "refused", b.address)
    assert status == 503 and body["error"] == "registry_unavailable", body
    assert admin(b_proxy.admin, "PUT", "/v1/services/q/instances/q1/heartbeat")[0] == 503
    assert admin(b_proxy.admin, "DELETE", "/v1/services/q/instances/q1")[0] == 503
    assert instance_ids(a_proxy, "q") == acked  # the refused change is not applied either
    assert metric(a_proxy, "switchyard_registry_backend_errors_total") > 0
    # Quorum returns: the proxies catch up without a restart.
    cluster.restart(1)
    cluster.restart(2)
    for p in (a_proxy, b_proxy):
        wait_until(lambda: metric(p, "switchyard_registry_backend_up") == 1, WAIT, 0.1, what="the proxy to see etcd again")
    wait_until(lambda: register(a_proxy, "q", "after", b.address)[0] == 201, WAIT, 0.1, what="a registration after the outage")
    acked.add("after")
    wait_until(lambda: instance_ids(b_proxy, "q") == acked, WAIT, what="B to see the registration after the outage")
    c_proxy = ready(proxies(shared_config(cluster)))
    assert instance_ids(c_proxy, "q") == acked
    assert {iid for (s, iid) in cluster.instances() if s == "q"} == acked


def test_compaction_while_a_watch_is_down_reads_everything_again(cluster, proxies, backends):
    b = backends()
    a_proxy = ready(proxies(shared_config(cluster, members=[1, 2])))
    b_proxy = ready(proxies(shared_config(cluster, members=[0])))  # B knows only member 0
    assert register(a_proxy, "cmp", "old", b.address)[0] == 201
    wait_until(lambda: instance_ids(b_proxy, "cmp") == {"old"}, WAIT, what="B to see 'old'")
    cluster.stop(0)  # B's watch (and B's etcd) is gone; A goes on with members 1 and 2
    wait_until(lambda: metric(b_proxy, "switchyard_registry_backend_up") == 0, WAIT, 0.1, what="B to notice")
    assert register(a_proxy, "cmp", "new", b.address)[0] == 201
    assert admin(a_proxy.admin, "DELETE", "/v1/services/cmp/instances/old")[0] == 204
    for i in range(5):
        assert register(a_proxy, "cmp", f"churn{i}", b.address)[0] == 201
        assert admin(a_proxy.admin, "DELETE", f"/v1/services/cmp/instances/churn{i}")[0] == 204
    cluster.compact(cluster.revision())
    cluster.restart(0)
    wait_until(lambda: instance_ids(b_proxy, "cmp") == {"new"}, WAIT, 0.05, what="B to read everything again")
    b_proxy.wait_log("compacted revision", WAIT)
    assert get(b_proxy.addr, "/", host="cmp").status == 200


def test_a_watch_that_goes_silent_is_found_by_the_stall_check_and_opened_again(cluster, proxies, backends):
    """A's watch stays open but delivers nothing (a relay drops etcd's bytes on it): no error, no
    close, the probe still answers. Only the stall check (every 5th probe: the newest revision
    under the prefix, ahead of the watch twice in a row) can find it; it opens the watch again
    and the change written meanwhile through B arrives on A."""
    b = backends()
    relay = StallingRelay(cluster.endpoints[0])
    try:
        a_proxy = ready(proxies(shared_config(cluster, members=[]).replace("endpoints: []", f"endpoints: [{relay.endpoint}]")))
        b_proxy = ready(proxies(shared_config(cluster)))
        assert register(b_proxy, "st", "before", b.address)[0] == 201
        wait_until(lambda: "before" in instance_ids(a_proxy, "st"), WAIT, 0.02, what="A to see 'before' (the watch works)")
        wait_until(lambda: relay.stall_watches() > 0, WAIT, 0.02, what="A's watch through the relay")
        assert register(b_proxy, "st", "after", b.address)[0] == 201
        a_proxy.wait_log("the watch delivered nothing past revision", timeout=WAIT)
        wait_until(lambda: "after" in instance_ids(a_proxy, "st"), WAIT, 0.02, what="A to see 'after' once the watch is opened again")
        assert metric(a_proxy, "switchyard_registry_backend_errors_total") >= 1
    finally:
        relay.close()


def test_a_new_proxy_syncs_ten_thousand_instances(cluster, proxies, backends):
    b = backends()
    # Written straight into etcd (as other proxies would have), 100 per transaction.
    for chunk in range(100):
        ops = []
        for i in range(chunk * 100, chunk * 100 + 100):
            doc = {"service": f"s{i % 50}", "id": f"i{i}", "address": b.address, "weight": 1, "tags": [], "meta": {},
                   "zone": "", "ttl": "0s", "routes": [], "draining": False}
            ops.append({"request_put": {"key": b64(f"/switchyard/services/s{i % 50}/instances/i{i}"), "value": b64(json.dumps(doc))}})
        r = cluster.call("/v3/kv/txn", {"success": ops})
        assert r.get("succeeded") is True, r
    t0 = time.monotonic()
    c_proxy = proxies(shared_config(cluster))
    ready(c_proxy)
    took = time.monotonic() - t0
    status, body, _ = admin(c_proxy.admin, "GET", "/v1/services")
    assert sum(s["instances"] for s in body["services"]) == 10000
    print(f"\nnew proxy: process start to ready with 10,000 instances read from etcd: {took * 1000:.0f} ms")
    assert get(c_proxy.addr, "/", host="s7").status == 200


def test_kill_9_during_a_registration_stream_keeps_every_acknowledged_one(cluster, proxies, backends):
    """Eight clients register at about 1,000/s in all through A; A is killed (-9) in the middle.
    Every registration A acknowledged is in etcd."""
    b = backends()
    a_proxy = ready(proxies(shared_config(cluster)))
    acked, lock, stop = set(), threading.Lock(), threading.Event()

    def client(n):
        i = 0
        while not stop.is_set() and i < 2000:
            t = time.monotonic()
            try:
                status, _, _ = register(a_proxy, "storm", f"c{n}-{i}", b.address)
            except (OSError, EOFError):
                return  # the proxy is gone
            if status == 201:
                with lock:
                    acked.add(f"c{n}-{i}")
            i += 1
            time.sleep(max(0.0, 0.008 - (time.monotonic() - t)))  # 125/s per client

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 500, WAIT, 0.01, what="500 acknowledged registrations")
    a_proxy.killed = True
    a_proxy.proc.send_signal(signal.SIGKILL)
    a_proxy.proc.wait()
    stop.set()
    for t in threads:
        t.join(WAIT)
    in_etcd = {iid for (s, iid) in cluster.instances() if s == "storm"}
    print(f"\nacknowledged before kill -9: {len(acked)}; in etcd: {len(in_etcd)}")
    assert acked <= in_etcd, f"{len(acked - in_etcd)} acknowledged registrations missing from etcd"


def test_mass_lease_expiry_seen_through_the_watch_keeps_instances_stale(cluster, proxies, backends):
    bs = [backends() for _ in range(4)]
    a_proxy = ready(proxies(shared_config(cluster)))
    b_proxy = ready(proxies(shared_config(cluster)))
    for i, b in enumerate(bs):
        assert register(a_proxy, "mass", f"m{i}", b.address, ttl="3s")[0] == 201
    wait_until(lambda: len(instance_ids(b_proxy, "mass")) == 4, WAIT, what="B to see all four")
    # No heartbeats: all four leases run out in etcd at about the same time.
    wait_until(lambda: not any(s == "mass" for (s, _) in cluster.instances()), WAIT, 0.1, what="the leases to run out")

    def states(p):
        status, body, _ = admin(p.admin, "GET", "/v1/services/mass")
        return sorted(i["state"] for i in body["instances"]) if status == 200 else []

    # Self-preservation on what the watch reported: kept, as stale, on both proxies.
    for p in (a_proxy, b_proxy):
        wait_until(lambda: states(p) == ["stale"] * 4, WAIT, what="all four kept as stale")
        assert get(p.addr, "/", host="mass").status == 200  # stale instances serve as a last resort
    p.wait_log("mass expiry", WAIT)
    # A heartbeat of a stale instance says register again; doing so makes it fresh everywhere.
    assert admin(b_proxy.admin, "PUT", "/v1/services/mass/instances/m0/heartbeat")[0] == 404
    assert register(b_proxy, "mass", "m0", bs[0].address, ttl="30s")[0] in (200, 201)
    wait_until(lambda: admin(a_proxy.admin, "GET", "/v1/services/mass/instances/m0")[1].get("state") == "healthy", WAIT,
               what="m0 fresh on A")
    # A deregistration through any proxy removes a stale instance everywhere (it has no key left).
    assert admin(a_proxy.admin, "DELETE", "/v1/services/mass/instances/m1")[0] == 204
    wait_until(lambda: "m1" not in instance_ids(b_proxy, "mass"), WAIT, what="m1 gone from B")


def test_same_id_registered_through_two_proxies_converges_on_etcds_order(cluster, proxies, backends):
    b1, b2 = backends(), backends()
    a_proxy = ready(proxies(shared_config(cluster)))
    b_proxy = ready(proxies(shared_config(cluster)))
    for round_ in range(20):
        results = {}

        def reg(p, addr, key):
            results[key] = register(p, "race", "same", addr, meta={"round": str(round_)})[0]

        ta = threading.Thread(target=reg, args=(a_proxy, b1.address, "a"))
        tb = threading.Thread(target=reg, args=(b_proxy, b2.address, "b"))
        ta.start(), tb.start(), ta.join(), tb.join()
        assert set(results.values()) <= {200, 201}, results
        winner = cluster.instances()[("race", "same")]["address"]

        def agreed():
            views = [admin(p.admin, "GET", "/v1/services/race/instances/same")[1] for p in (a_proxy, b_proxy)]
            return all(v.get("address") == winner and v.get("meta", {}).get("round") == str(round_) for v in views)

        wait_until(agreed, WAIT, what=f"both proxies to hold etcd's value (round {round_})")


def test_consul_and_eureka_clients_share_the_registry_too(cluster, proxies, backends):
    """A Consul client registers through A with a TTL check and passes it through B; a Eureka-style
    registration through B is renewed through A (the compatibility APIs write the same shared keys)."""
    consul = pytest.importorskip("consul")
    b = backends()
    a_proxy = ready(proxies(shared_config(cluster)))
    b_proxy = ready(proxies(shared_config(cluster)))
    ca = consul.Consul(host=a_proxy.admin[0], port=a_proxy.admin[1])
    cb = consul.Consul(host=b_proxy.admin[0], port=b_proxy.admin[1])
    host, port = b.address.rsplit(":", 1)
    assert ca.agent.service.register("pay", service_id="pay-1", address=host, port=int(port),
                                     check=consul.Check.ttl("60s"))
    wait_until(lambda: "pay-1" in instance_ids(b_proxy, "pay"), WAIT, what="B to see the Consul registration")
    assert ("pay", "pay-1") in cluster.instances()
    assert cb.agent.check.ttl_pass("service:pay-1")  # renews the shared lease through B
    _, nodes = cb.health.service("pay")
    assert [n["Service"]["ID"] for n in nodes] == ["pay-1"]
    doc = {"instance": {"instanceId": "inv-1", "app": "INVENTORY", "ipAddr": host, "port": {"$": int(port), "@enabled": "true"},
                        "status": "UP", "leaseInfo": {"durationInSecs": 60}}}
    status, _, _ = admin(b_proxy.admin, "POST", "/eureka/apps/INVENTORY", doc)
    assert status == 204
    wait_until(lambda: "inv-1" in instance_ids(a_proxy, "inventory"), WAIT, what="A to see the Eureka registration")
    assert admin(a_proxy.admin, "PUT", "/eureka/apps/INVENTORY/inv-1")[0] == 200
    assert ca.agent.service.deregister("pay-1")
    wait_until(lambda: "pay-1" not in instance_ids(b_proxy, "pay"), WAIT, what="B to see the Consul deregistration")


def test_large_registrations_are_shared_intact_beside_small_ones(cluster, proxies, backends):
    """Registrations of 700 KiB (the admin API takes up to 1 MiB; etcd's request limit is 1.5 MiB,
    two of them together would pass it) arriving in one loop turn with small ones: each request
    is sent whole but its last byte, on its own connection; the last bytes are sent while the
    proxy is stopped (SIGSTOP), so its loop finds all eight complete together. Every one is acknowledged, shared whole,
    and etcd stays writable. (How a turn's writes are cut into transactions is also checked
    deterministically by the unit test of plan_transactions.)"""
    import socket
    b = backends()
    # Each big registration is a Raft round carrying 1 MiB to three members' disks: on a loaded
    # machine that may take longer than the 2 s the other tests use to tell a member is gone,
    # and this test is about how writes are cut, not about how fast a member answers.
    a_proxy = ready(proxies(shared_config(cluster, timeout="20s")))
    b_proxy = ready(proxies(shared_config(cluster, timeout="20s")))
    big = "x" * (700 * 1024)
    conns, reqs = [], []
    for i in range(8):
        meta = {"blob": big} if i < 4 else {"small": "yes"}
        body = json.dumps({"address": b.address, "ttl": "10m", "meta": meta}).encode()
        reqs.append(f"PUT /v1/services/big/instances/g{i} HTTP/1.1\r\nHost: admin\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        c = socket.create_connection(a_proxy.admin, timeout=WAIT)
        c.sendall(reqs[-1][:-1])
        conns.append(c)
    # Everything but the last bytes has been read by the proxy: its receive queues are empty.
    ports = [c.getsockname()[1] for c in conns]
    wait_until(lambda: all(rx_queue(a_proxy.admin[1], p) == 0 for p in ports), WAIT, 0.01, what="the proxy to read the bodies")
    # The last bytes arrive while the proxy is stopped, so its loop finds all eight requests
    # complete in one turn when it runs again.
    a_proxy.send_signal(signal.SIGSTOP)
    try:
        for c, r in zip(conns, reqs):
            c.sendall(r[-1:])
        wait_until(lambda: all(rx_queue(a_proxy.admin[1], p) == 1 for p in ports), WAIT, 0.01, what="the last bytes queued")
    finally:
        a_proxy.send_signal(signal.SIGCONT)
    statuses = []
    for c in conns:
        got = b""
        while b"\r\n" not in got:
            data = c.recv(4096)
            if not data:
                break
            got += data
        statuses.append(got.split(b" ", 2)[1] if got else b"")
        c.close()
    assert statuses == [b"201"] * 8, (statuses, a_proxy.log()[-4000:])
    wait_until(lambda: len(instance_ids(b_proxy, "big")) == 8, WAIT, what="B to see all eight")
    docs = cluster.instances()
    assert all(docs[("big", f"g{i}")]["meta"].get("blob") == big for i in range(4))
    assert metric(a_proxy, "switchyard_registry_backend_up") == 1


def test_config_rejects_a_snapshot_file_with_the_etcd_backend(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("registry:\n  backend: etcd\n  snapshot: /tmp/x.json\n  etcd:\n    endpoints: []\n    prefix: nope\n")
    r = subprocess.run([BIN, "--check", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "registry.snapshot is for backend: embedded" in r.stderr + r.stdout
    assert "registry.etcd.endpoints" in r.stderr + r.stdout
    assert "registry.etcd.prefix" in r.stderr + r.stdout
