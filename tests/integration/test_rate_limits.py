"""Rate limits (README.md, "Rate limits"): token buckets per key, the proxy's rate whatever the
workers, 429 with Retry-After and the RateLimit headers, dry run, X-Forwarded-For behind trusted
proxies, LRU eviction, the status call and the metrics; scope: global across two proxies on a
3-member etcd.

Covers: HTTP/1.1, plaintext, and TLS in the tls_rate_limits rerun (SWITCHYARD_TEST_TLS=1).
Counts are exact, never timed: policies that must not refill during a test use rates per hour.
"""
import json
import re
import socket
import time

from conftest import service_config
from harness import Client, admin, connect, metric, wait_until


def test_a_burst_over_keep_alive_connections_and_two_workers_passes_exactly_burst(backends, proxies):
    b = backends()
    p = proxies(f"""
workers: 2
rate_limits:
  all: {{ rate: 1/h, burst: 20, key: none }}
services:
{service_config("svc", [b], "rate_limit: all")}""")
    # Eight keep-alive connections (spread over both workers by the kernel), five requests each,
    # interleaved: the bucket is the proxy's, so exactly 20 of the 40 pass.
    clients = [Client(p.addr) for _ in range(8)]
    statuses = []
    for _ in range(5):
        for c in clients:
            r = c.request("GET", "/", "svc")
            statuses.append(r.status)
            assert r.header("RateLimit-Policy") == '"all";q=20;w=72000', r.headers
            assert re.fullmatch(r'"all";r=\d+;t=\d+', r.header("RateLimit")), r.header("RateLimit")
            if r.status == 429:
                assert r.json()["error"] == "rate_limited"
                assert int(r.header("Retry-After")) >= 3500  # a token per 3,600 s
    for c in clients:
        c.close()
    assert statuses.count(200) == 20 and statuses.count(429) == 20, statuses
    assert len(b.requests) == 20  # refused requests never reach an instance
    assert metric(p, "switchyard_rate_limited_total", policy="all", mode="enforce") == 20
    # Refusals are not the instance's fault: its breaker and outlier detection never hear of them.
    inst = admin(p.admin, "GET", "/v1/services/svc")[1]["instances"][0]
    assert inst["state"] == "healthy" and inst.get("circuit_breaker", "closed") == "closed", inst


def test_retry_after_is_when_the_next_token_comes(backends, proxies):
    b = backends()
    p = proxies(f"""
rate_limits:
  slow: {{ rate: 1/s, burst: 1, key: none }}
services:
{service_config("svc", [b], "rate_limit: slow")}""")
    c = Client(p.addr)
    assert c.request("GET", "/", "svc").status == 200
    r = c.request("GET", "/", "svc")
    assert r.status == 429 and r.header("Retry-After") == "1"
    # The token comes back (polled, not slept: a slow machine only waits longer).
    wait_until(lambda: c.request("GET", "/", "svc").status == 200, 30, what="a token after Retry-After")
    c.close()


def test_keys_are_separate_per_header_and_per_forwarded_client(backends, proxies):
    b = backends()
    p = proxies(f"""
client: {{ trusted_proxies: [127.0.0.0/8, "::1"] }}
rate_limits:
  tenant: {{ rate: 1/h, burst: 2, key: "header:X-Tenant" }}
  client: {{ rate: 1/h, burst: 3, key: source_ip }}
routes:
  - {{ match: {{ path_prefix: /t }}, service: svc, rate_limit: tenant }}
  - {{ match: {{ path_prefix: /c }}, service: svc, rate_limit: client }}
services:
{service_config("svc", [b])}""")
    c = Client(p.addr)

    def st(path, headers):
        return c.request("GET", path, "svc", headers).status

    assert [st("/t", [("X-Tenant", "a")]) for _ in range(3)] == [200, 200, 429]
    assert [st("/t", [("X-Tenant", "b")]) for _ in range(3)] == [200, 200, 429]  # b's own bucket
    assert all(st("/t", []) == 200 for _ in range(5))  # no such header: this policy does not apply
    # The peer (127.0.0.1) is a trusted proxy: the client is the first untrusted address of
    # X-Forwarded-For, read from the right.
    assert [st("/c", [("X-Forwarded-For", "203.0.113.1")]) for _ in range(4)] == [200, 200, 200, 429]
    assert [st("/c", [("X-Forwarded-For", "203.0.113.2, 127.0.0.9")]) for _ in range(4)] == [200, 200, 200, 429]
    assert st("/c", [("X-Forwarded-For", "203.0.113.1, 203.0.113.2")]) == 429  # 203.0.113.2 again
    c.close()
    view = {x["name"]: x for x in admin(p.admin, "GET", "/v1/rate-limits?keys=10")[1]}
    assert view["tenant"]["keys"] == 2 and view["tenant"]["refused"] == 2
    assert view["client"]["key"] == "source_ip" and view["client"]["keys"] == 2
    assert {k["key"]: k["tokens"] for k in view["tenant"]["recent_keys"]} == {"a": 0, "b": 0}


def test_dry_run_refuses_nothing_but_counts_and_logs(backends, proxies, tmp_path):
    b = backends()
    log = tmp_path / "access.log"
    p = proxies(f"""
access_log: {log}
rate_limits:
  trial: {{ rate: 1/h, burst: 2, key: none, mode: dry_run }}
services:
{service_config("svc", [b], "rate_limit: trial")}""")
    c = Client(p.addr)
    assert [c.request("GET", "/", "svc").status for _ in range(5)] == [200] * 5
    c.close()
    assert len(b.requests) == 5
    assert metric(p, "switchyard_rate_limited_total", policy="trial", mode="dry_run") == 3

    def lines():
        return [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []

    wait_until(lambda: len(lines()) >= 5, 30, what="access log lines")
    assert [l.get("rate_limited") for l in lines()] == [None, None, "trial", "trial", "trial"]


def test_a_route_policy_and_a_service_policy_both_apply_and_a_reload_keeps_the_buckets(backends, proxies):
    b = backends()
    cfg = f"""
rate_limits:
  route_side: {{ rate: 1/h, burst: 5, key: route }}
  service_side: {{ rate: 1/h, burst: 3, key: service }}
routes:
  - {{ match: {{ path_prefix: /a }}, service: svc, rate_limit: route_side }}
services:
{service_config("svc", [b], "rate_limit: service_side")}"""
    p = proxies(cfg)
    c = Client(p.addr)
    r = c.request("GET", "/a", "svc")
    assert r.status == 200
    assert r.header("RateLimit-Policy") == '"route_side";q=5;w=18000, "service_side";q=3;w=10800'
    assert [c.request("GET", "/a", "svc").status for _ in range(3)] == [200, 200, 429]  # the service's 3
    assert admin(p.admin, "POST", "/v1/reload")[0] == 200
    assert c.request("GET", "/b", "svc").status == 429  # same policy, same bucket after the reload
    c.close()


def test_100000_distinct_keys_stay_within_max_keys_and_memory(proxies):
    # No instance: the limiter runs before the proxy answers 503 itself, so 100,000 requests cost
    # no backend. Pipelined on a few connections.
    p = proxies("""
rate_limits:
  many: { rate: 1/h, burst: 1, key: "header:X-Key", max_keys: 10000 }
services:
  svc: { rate_limit: many }
""")
    before = p.rss_peak_kb()
    total, conns = 100000, 4
    per = total // conns
    for k in range(conns):
        # One connection at a time (one left idle while another works would meet header_timeout),
        # batches of 50 pipelined requests, each read to its last answer before the next goes
        # (an SSL socket takes no concurrent reader and writer). Small batches: the client writes
        # before it reads, so a batch's requests must fit in the socket buffers even when the
        # kernel shrinks them under memory pressure (CI, many transfers at once); with 500 the
        # client blocked writing while the proxy waited for it to read, until the proxy gave up.
        s = connect(p.addr, timeout=120)
        batch = 50
        for first in range(0, per, batch):
            s.sendall(b"".join(b"GET / HTTP/1.1\r\nHost: svc\r\nX-Key: k%d\r\n\r\n" % (k * per + i)
                               for i in range(first, first + batch)))
            buf = b""
            while buf.count(b"HTTP/1.1 503") < batch:
                chunk = s.recv(1 << 20)
                assert chunk, f"closed after {first + buf.count(b'HTTP/1.1 503')} answers"
                buf += chunk
        s.close()
    view = admin(p.admin, "GET", "/v1/rate-limits?keys=0")[1][0]
    assert view["keys"] <= 10000 and view["keys"] >= 10000 - 16 * 2, view
    assert view["evictions"] == total - view["keys"], view
    assert metric(p, "switchyard_rate_limit_evictions_total", policy="many") == view["evictions"]
    assert metric(p, "switchyard_rate_limit_keys", policy="many") == view["keys"]
    growth = p.rss_peak_kb() - before
    # Under AddressSanitizer freed memory sits in its quarantine (up to 256 MiB), so RSS says
    # nothing there; the key count above is the bound that holds in every build.
    sanitized = any(lib in open(f"/proc/{p.proc.pid}/maps").read() for lib in ("libasan", "libtsan"))
    if not sanitized:
        assert growth < 64 * 1024, f"peak RSS grew {growth} KiB for 10,000 kept keys"


def test_scope_global_divides_the_rate_among_proxies_and_a_survivor_takes_it_all(backends, proxies, tmp_path):
    """Two proxies on one 3-member etcd with a policy of scope: global: each takes half of the
    burst (and of the rate), so together they hold the configured total; when one is killed its
    presence lease runs out and the survivor takes the whole."""
    import signal
    from etcd_cluster import EtcdCluster
    (tmp_path / "etcd").mkdir()
    cluster = EtcdCluster(str(tmp_path / "etcd"))
    try:
        b = backends()
        eps = ", ".join(cluster.endpoints)
        cfg = f"""
registry:
  backend: etcd
  etcd: {{ endpoints: [{eps}], timeout: 2s }}
rate_limits:
  shared: {{ rate: 1/h, burst: 10, key: "header:X-Key", scope: global }}
services:
{service_config("svc", [b], "rate_limit: shared")}"""
        a, c = proxies(cfg), proxies(cfg)

        def proxies_seen(p):
            return admin(p.admin, "GET", "/v1/rate-limits?keys=0")[1][0]["proxies"]

        wait_until(lambda: proxies_seen(a) == 2 and proxies_seen(c) == 2, 120, what="both proxies to count two")

        def passes(p, key, n=15):
            cl = Client(p.addr)
            got = [cl.request("GET", "/", "svc", [("X-Key", key)]).status for _ in range(n)]
            cl.close()
            return got.count(200)

        # The same key on both proxies: 5 + 5 = the configured 10.
        assert passes(a, "k1") == 5 and passes(c, "k1") == 5
        c.proc.kill()
        c.proc.wait()
        c.killed = True
        wait_until(lambda: proxies_seen(a) == 1, 120, what="the survivor to count one (the dead proxy's lease ran out)")
        assert passes(a, "k2") == 10  # the whole burst for a key it had not seen
    finally:
        cluster.close()
