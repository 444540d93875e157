"""Load-balancing policies through the real proxy: from the config and for registered services."""
import collections
import threading
import time

import pytest

from conftest import holding_backend  # noqa: E402
from harness import Client, admin, get, respond, wait_until


def named(backends, n, prefix="b", handler=None):
    return [backends(handler, name=f"{prefix}{i}") for i in range(n)]


def config(bs, lb="round_robin", extra="", top=""):
    lines = [top + "services:", "  s:", f"    lb: {lb}"]
    lines += ["    " + l for l in extra.strip("\n").split("\n") if l]
    lines.append("    instances:")
    lines += [f"      - {{ address: {b.address}, id: {b.name} }}" for b in bs]
    return "\n".join(lines) + "\n"


def who(r):
    return r.body.split()[0].decode()


def spread(p, n, headers=None):
    c = Client(p.addr)
    counts = collections.Counter(who(c.request(host="s", headers=headers)) for _ in range(n))
    c.close()
    return counts


@pytest.mark.parametrize("lb", ["round_robin", "least_request", "random", "ring_hash", "maglev", "ewma"])
def test_every_policy_serves_from_config(backends, proxies, lb):
    bs = named(backends, 3)
    p = proxies(config(bs, lb))
    counts = spread(p, 90)
    assert sum(counts.values()) == 90
    # Without a hash key, even the hashing policies spread requests.
    assert set(counts) == {"b0", "b1", "b2"}, counts


@pytest.mark.parametrize("lb", ["ring_hash", "maglev"])
def test_hash_policies_are_sticky_by_header(backends, proxies, lb):
    bs = named(backends, 4)
    p = proxies(config(bs, lb, "hash_on: header:x-user-id"))
    owners = {}
    for user in range(40):
        seen = spread(p, 3, [("X-User-Id", f"user-{user}")])
        assert len(seen) == 1, seen  # one user, one backend
        owners[user] = next(iter(seen))
    assert len(set(owners.values())) >= 3  # users spread over the backends


def test_cookie_and_source_ip_hashing(backends, proxies):
    bs = named(backends, 4)
    p = proxies(config(bs, "ring_hash", "hash_on: cookie:session"))
    a = spread(p, 5, [("Cookie", "theme=dark; session=abc123")])
    assert len(a) == 1
    p2 = proxies(config(bs, "maglev", "hash_on: source_ip"))
    assert len(spread(p2, 10)) == 1  # every request comes from 127.0.0.1


def test_policy_applies_to_registered_instances(backends, proxies):
    bs = named(backends, 3)
    p = proxies(config([], "maglev", "hash_on: header:x-user-id"))
    for b in bs:
        assert admin(p.admin, "PUT", f"/v1/services/s/instances/{b.name}", {"address": b.address})[0] == 201
    assert len(spread(p, 6, [("X-User-Id", "u1")])) == 1
    assert len(spread(p, 60)) == 3


def test_ewma_sheds_a_slow_backend(backends, proxies):
    def slow(conn, req, backend):
        time.sleep(0.05)
        respond(conn, 200, b"slow")
        return True

    fast = named(backends, 2, "fast")
    slow_b = backends(slow, name="slow")
    p = proxies(config(fast + [slow_b], "ewma"))
    counts = collections.Counter()
    lock = threading.Lock()

    def client():
        c = Client(p.addr)
        for _ in range(60):
            r = c.request(host="s")
            with lock:
                counts[who(r)] += 1
        c.close()

    ts = [threading.Thread(target=client) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    total = sum(counts.values())
    share = counts["slow"] / total
    print(f"ewma: slow backend share {share:.3f} of {total}")
    assert share < 0.10, counts  # round robin would give it a third


def test_least_request_avoids_a_backend_holding_requests(backends, proxies):
    bs = named(backends, 2)
    held, gate = holding_backend(backends, name="stuck", body=b"stuck")
    p = proxies(config(bs + [held], "least_request"))
    # Send requests one at a time until one is held by the stuck backend (the fast ones answer at
    # once, so while all are idle each pick is a coin toss; bounded, not hoped for).
    pinned = []
    while not held.requests and len(pinned) < 40:
        seen = sum(len(b.requests) for b in bs + [held])
        c = Client(p.addr)
        c.send(b"GET / HTTP/1.1\r\nHost: s\r\n\r\n")
        pinned.append(c)
        wait_until(lambda: sum(len(b.requests) for b in bs + [held]) > seen, what="the request at a backend")
    assert held.requests, "40 requests and none went to the stuck backend"
    counts = spread(p, 60)
    gate.set()
    for c in pinned:
        c.close()
    assert counts["stuck"] <= 3, counts


def test_slow_start_ramps_a_new_instance(backends, proxies):
    old = named(backends, 2, "old")
    new = backends(name="new")
    p = proxies(config(old, "round_robin", "slow_start: 3s"))  # instances present at start do not ramp
    assert admin(p.admin, "PUT", "/v1/services/s/instances/new", {"address": new.address})[0] == 201
    shares = []
    for _ in range(3):
        counts = spread(p, 200)
        shares.append(counts["new"] / 200)
        time.sleep(1.0)  # the ramp is a function of time: sample it once a second
    print(f"slow start: share of the new instance per second: {shares}")
    assert shares[0] < 0.15  # starts near 10 % of its weight (≈ 5 % of traffic)
    assert shares[-1] > shares[0]  # and rises
    wait_until(lambda: spread(p, 150)["new"] >= 40, 5, what="full share")  # ≈ a third once ramped


def test_zone_awareness_stays_local_then_spills(backends, proxies):
    local = named(backends, 2, "local")
    remote = named(backends, 2, "remote")
    lines = ["zone: z1", "services:", "  s:", "    instances:"]
    for b in local:
        lines.append(f"      - {{ address: {b.address}, id: {b.name}, zone: z1 }}")
    for b in remote:
        lines.append(f"      - {{ address: {b.address}, id: {b.name}, zone: z2 }}")
    p = proxies("\n".join(lines) + "\n")
    counts = spread(p, 60)
    assert set(counts) == {"local0", "local1"}, counts
    # Half the local zone drains: 50 % of its capacity < 70 % → about 1 - 0.5/0.7 ≈ 29 % spills.
    admin(p.admin, "PUT", "/v1/services/s/instances/local1/drain", {"enabled": True})
    counts = spread(p, 400)
    spill = (counts["remote0"] + counts["remote1"]) / 400
    print(f"zone spill with half the local zone out: {spill:.3f}")
    assert 0.15 < spill < 0.45, counts
    assert counts["local1"] == 0


def test_route_tags_select_a_subset(backends, proxies):
    primary, replica = backends(name="primary"), backends(name="replica")
    cfg = f"""
routes:
  - match: {{ host: writes.example }}
    service: db
    tags: [primary]
services:
  db:
    instances:
      - {{ address: {primary.address}, id: p, tags: [primary] }}
      - {{ address: {replica.address}, id: r, tags: [replica] }}
"""
    p = proxies(cfg)
    c = Client(p.addr)
    writes = collections.Counter(who(c.request(host="writes.example")) for _ in range(10))
    both = collections.Counter(who(c.request(host="db")) for _ in range(10))
    c.close()
    assert set(writes) == {"primary"} and set(both) == {"primary", "replica"}
    assert [i["id"] for i in admin(p.admin, "GET", "/v1/services/db?tag=replica")[1]["instances"]] == ["r"]
