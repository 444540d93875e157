"""The dashboard's server side over real sockets (admin listener: HTTP/1.1 in plaintext, and over
TLS in the last test; HTTP/2 is not spoken yet, issue 24): the built-in
page (CSP, ETag/304, gzip), the event stream (ids, Last-Event-ID resume, resync, slow readers
dropped), the dashboard reads (filters, sort, pages, traffic over the last minute), cross-site
refusals and admin.read_token. The page itself in a real browser: test_dashboard_browser.py."""
import gzip
import json
import re
import socket
import subprocess
import time

import pytest

from harness import BIN, Client, admin, get, metric, respond, wait_until


def sse_open(addr, last_id=None, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect(tuple(addr))
    extra = f"Last-Event-ID: {last_id}\r\n" if last_id is not None else ""
    s.sendall(f"GET /v1/events HTTP/1.1\r\nHost: admin\r\nAccept: text/event-stream\r\n{extra}\r\n".encode())
    return s


class Sse:
    """Reads a text/event-stream: the head, then events as dicts {id, event, data}."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""
        head = self._until(b"\r\n\r\n")
        self.head = head.decode()

    def _until(self, sep):
        while sep not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("stream closed")
            self.buf += chunk
        out, self.buf = self.buf.split(sep, 1)
        return out

    def next(self):
        while True:
            frame = self._until(b"\n\n").decode()
            ev = {}
            for line in frame.split("\n"):
                if line.startswith(":") or not line:
                    continue
                k, _, v = line.partition(":")
                ev[k] = v[1:] if v.startswith(" ") else v
            if "data" in ev:
                ev["json"] = json.loads(ev["data"])
                return ev
            if "retry" in ev:
                self.retry = int(ev["retry"])

    def next_of(self, type_, pred=lambda e: True, timeout=120):
        # (Heartbeats keep the socket busy, so the bound is on the whole wait.)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            e = self.next()
            if e.get("event") == type_ and pred(e["json"]):
                return e
        raise AssertionError(f"no {type_} event within {timeout} s")


def event_seen(p, type_, pred):
    """The event, from the history if it has happened already, else from the stream after it."""
    _, h, _ = admin(p.admin, "GET", "/v1/events?format=json")
    for e in h["events"]:
        if e["type"] == type_ and pred(e):
            return e, Sse(sse_open(p.admin, last_id=h["last_id"]))
    s = Sse(sse_open(p.admin, last_id=h["last_id"]))
    return s.next_of(type_, pred)["json"], s


def test_ui_is_built_in_with_csp_etag_and_gzip(proxies):
    p = proxies("")
    status, body, r = admin(p.admin, "GET", "/ui/")
    assert status == 200 and r.header("content-type").startswith("text/html")
    page = r.body.decode()
    assert "<script src=\"/ui/app.js\"" in page and "http://" not in page and "https://" not in page
    csp = r.header("content-security-policy")
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.header("x-content-type-options") == "nosniff"
    etag = r.header("etag")
    assert etag
    # Revalidation answers 304 with no body; gzip when the client takes it, the same bytes inside.
    _, _, r304 = admin(p.admin, "GET", "/ui/", headers=[("If-None-Match", etag)])
    assert r304.status == 304 and r304.body == b""
    _, _, rz = admin(p.admin, "GET", "/ui/app.js", headers=[("Accept-Encoding", "gzip, deflate, br")])
    assert rz.header("content-encoding") == "gzip" and rz.header("content-type").startswith("text/javascript")
    _, _, plain = admin(p.admin, "GET", "/ui/app.js")
    assert plain.header("content-encoding") is None
    assert gzip.decompress(rz.body) == plain.body and len(rz.body) < len(plain.body) / 2
    assert admin(p.admin, "GET", "/ui/style.css")[2].header("content-type").startswith("text/css")
    status, body, _ = admin(p.admin, "GET", "/ui/nothing.js")
    assert status == 404
    status, _, r = admin(p.admin, "GET", "/")
    assert status == 302 and r.header("location") == "/ui/"
    # Only GET: the page's files cannot be written.
    assert admin(p.admin, "POST", "/ui/app.js")[0] == 405


def test_event_stream_sends_changes_with_ids_and_resumes_from_last_event_id(backends, proxies):
    b = backends()
    p = proxies("")
    s = Sse(sse_open(p.admin))
    assert "200" in s.head.split("\r\n")[0] and "text/event-stream" in s.head
    assert admin(p.admin, "PUT", "/v1/services/shop/instances/s1", {"address": b.address, "ttl": "0s"})[0] == 201
    e1 = s.next_of("registry")
    assert e1["json"]["service"] == "shop" and e1["json"]["instance"] == "s1" and "registered" in e1["json"]["message"]
    assert s.retry == 2000 and int(e1["id"]) == e1["json"]["id"]
    s.sock.close()
    # While nobody watches: a drain and a deregistration.
    assert admin(p.admin, "PUT", "/v1/services/shop/instances/s1/drain", {"enabled": True})[0] == 200
    assert admin(p.admin, "DELETE", "/v1/services/shop/instances/s1")[0] == 204
    # Back with Last-Event-ID: exactly what was missed, in order, then live again.
    s2 = Sse(sse_open(p.admin, last_id=e1["id"]))
    missed = [s2.next(), s2.next()]
    assert [int(e["id"]) for e in missed] == [int(e1["id"]) + 1, int(e1["id"]) + 2]
    assert "draining" in missed[0]["json"]["message"] and "deregistered" in missed[1]["json"]["message"]
    assert admin(p.admin, "PUT", "/v1/services/shop/instances/s2", {"address": b.address, "ttl": "0s"})[0] == 201
    assert s2.next_of("registry")["json"]["instance"] == "s2"
    # An id the history no longer holds (or another process's): told to resync.
    s3 = Sse(sse_open(p.admin, last_id=1))
    assert s3.next()["event"] == "resync"
    # A malformed id is refused, not guessed.
    c = Client(p.admin)
    r = c.request("GET", "/v1/events", "admin", [("Last-Event-ID", "abc")])
    assert r.status == 400
    # The history as JSON, for scripts.
    status, body, _ = admin(p.admin, "GET", "/v1/events?format=json")
    assert status == 200 and body["events"][-1]["instance"] == "s2" and body["last_id"] == body["events"][-1]["id"]
    assert metric(p, "switchyard_event_watchers") == 2.0
    s2.sock.close()
    s3.sock.close()
    wait_until(lambda: metric(p, "switchyard_event_watchers") == 0.0, 30, what="closed readers to be forgotten")


def test_health_flip_and_reload_are_events_with_reasons(proxies, tmp_path):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens: probes fail with connection refused
    cfg = f"""
services:
  pay:
    instances: [{{address: "127.0.0.1:{port}"}}]
    health_check: {{path: /health, interval: 500ms, timeout: 400ms, unhealthy_threshold: 1}}
"""
    p = proxies(cfg)
    e, s = event_seen(p, "health", lambda j: j.get("service") == "pay")
    assert "unhealthy" in e["message"] and "connect" in e["message"]
    # A refused reload is an event and a banner naming the error.
    with open(p.config_path, "a") as f:
        f.write("\nbogus_key: 1\n")
    assert admin(p.admin, "POST", "/v1/reload")[0] == 400
    r = s.next_of("reload")
    assert "refused" in r["json"]["message"]
    status, ov, _ = admin(p.admin, "GET", "/v1/dashboard")
    banner = [b for b in ov["banners"] if b["kind"] == "reload_refused"]
    assert banner and any("bogus_key" in line for line in banner[0]["errors"])


def test_a_reader_that_does_not_read_is_dropped_not_buffered(backends, proxies):
    b = backends()
    p = proxies("")
    slow = sse_open(p.admin, rcvbuf=4096)  # never read after the head
    wait_until(lambda: metric(p, "switchyard_event_watchers") == 1.0, 30, what="the reader to be counted")
    # Big events, cheaply: each refused reload's event quotes the config error, here a 60 KB value.
    # The kernel's send buffer takes a few MB first; past it, 1 MiB queued drops the reader.
    with open(p.config_path, "a") as f:
        f.write("\nlog_level: " + "k" * 60000 + "\n")
    for reloads in range(1, 1001):
        assert admin(p.admin, "POST", "/v1/reload")[0] == 400
        if metric(p, "switchyard_event_watchers") == 0.0:
            break
    else:
        raise AssertionError("a reader 60 MB behind was never dropped")
    # Dropped after a bounded backlog (kernel buffers + 1 MiB), not after everything was queued.
    assert reloads * 60000 < 16 * 1024 * 1024, reloads
    # The proxy is fine and serves a new reader at once.
    s = Sse(sse_open(p.admin))
    assert admin(p.admin, "PUT", "/v1/services/flood/instances/f2", {"address": b.address, "ttl": "0s"})[0] == 201
    assert s.next_of("registry", lambda j: j.get("instance") == "f2")
    slow.close()


def test_dashboard_reads_filter_sort_page_and_rate(backends, proxies):
    def failing(conn, req, backend):
        respond(conn, 503, b"no")
        return True
    good, bad = backends(name="good"), backends(failing, name="bad")
    p = proxies("")
    for i in range(5):
        be = bad if i == 4 else good
        assert admin(p.admin, "PUT", f"/v1/services/api/instances/i{i}",
                     {"address": be.address, "ttl": "0s", "tags": ["blue" if i % 2 else "green"], "zone": f"z{i % 2}"})[0] == 201
    admin(p.admin, "PUT", "/v1/services/api/instances/i1/drain", {"enabled": True})
    status, ov, _ = admin(p.admin, "GET", "/v1/dashboard")
    assert status == 200
    svc = [s for s in ov["services"] if s["name"] == "api"][0]
    assert svc["instances"] == 5 and svc["states"] == {"healthy": 4, "draining": 1} and svc["lb"] == "round_robin"
    base = "/v1/dashboard/services/api"
    _, page, _ = admin(p.admin, "GET", base + "?state=draining")
    assert [i["id"] for i in page["instances"]] == ["i1"] and "draining" in page["instances"][0]["why"]
    _, page, _ = admin(p.admin, "GET", base + "?tag=blue")
    assert sorted(i["id"] for i in page["instances"]) == ["i1", "i3"] and page["tags"] == ["blue", "green"]
    _, page, _ = admin(p.admin, "GET", base + "?sort=id&order=desc&offset=1&limit=2")
    assert [i["id"] for i in page["instances"]] == ["i3", "i2"] and page["total"] == 5
    _, page, _ = admin(p.admin, "GET", base + "?q=i4")
    assert [i["id"] for i in page["instances"]] == ["i4"]
    _, page, _ = admin(p.admin, "GET", base + "?id=i2")
    assert [i["id"] for i in page["instances"]] == ["i2"] and page["total"] == 1
    for bad_query in ("?sort=nope", "?order=up", "?limit=100000", "?offset=-1"):
        assert admin(p.admin, "GET", base + bad_query)[0] == 400, bad_query
    assert admin(p.admin, "GET", "/v1/dashboard/services/none-such")[0] == 404
    # Traffic over the last minute, from the proxy's own counters: requests through the proxy
    # show as req/s, a service whose only instance answers 503 as 5xx/s, and latency quantiles.
    assert admin(p.admin, "PUT", "/v1/services/broken/instances/x", {"address": bad.address, "ttl": "0s"})[0] == 201

    def traffic():
        _, ov, _ = admin(p.admin, "GET", "/v1/dashboard")
        t = {s["name"]: s["traffic"] for s in ov["services"]}
        if t["api"] and t["api"]["req_s"] > 0 and t["broken"] and t["broken"]["err5xx_s"] > 0:
            return t
        for _ in range(10):
            get(p.addr, host="api")
            get(p.addr, host="broken")
        return None
    t = wait_until(traffic, 60, interval=0.5, what="rates to appear")
    assert t["api"]["p50_ms"] is not None and t["api"]["p99_ms"] >= t["api"]["p50_ms"] > 0
    assert t["api"]["window_s"] >= 1

    def inst_traffic():
        _, page, _ = admin(p.admin, "GET", base + "?sort=err5xx_s&order=desc&limit=1")
        i = page["instances"][0]
        if i["traffic"] and i["traffic"]["err5xx_s"] > 0:
            return i
        for _ in range(10):
            get(p.addr, host="api")
        return None
    i = wait_until(inst_traffic, 60, interval=0.5, what="instance rates to appear")
    assert i["id"] == "i4"  # the one that answers 503, sorted first


def test_changes_from_another_site_are_refused(backends, proxies):
    b = backends()
    p = proxies("")  # loopback, no token: only the origin check stands between a page and a change
    assert admin(p.admin, "PUT", "/v1/services/web/instances/w1", {"address": b.address, "ttl": "0s"})[0] == 201
    # What a form on another site makes a browser send: a simple POST with its Origin.
    for hdrs in ([("Origin", "http://evil.example"), ("Content-Type", "application/x-www-form-urlencoded")],
                 [("Sec-Fetch-Site", "cross-site")], [("Origin", "null")]):
        status, body, _ = admin(p.admin, "POST", "/v1/services/web/instances/w1/drain", headers=hdrs)
        assert status == 403 and body["error"] == "cross_site", hdrs
        assert admin(p.admin, "DELETE", "/v1/services/web/instances/w1", headers=hdrs)[0] == 403
    # A GET (an <img src=...>) of an action changes nothing either.
    assert admin(p.admin, "GET", "/v1/services/web/instances/w1/drain")[0] == 405
    _, inst, _ = admin(p.admin, "GET", "/v1/services/web/instances/w1")
    assert inst["state"] == "healthy"
    # Our own page (same origin) may act.
    host = f"{p.admin[0]}:{p.admin[1]}"
    c = Client(p.admin)
    body = b'{"enabled": true}'
    r = c.request("PUT", "/v1/services/web/instances/w1/drain", host,
                  [("Origin", "http://" + host), ("Sec-Fetch-Site", "same-origin"), ("Content-Type", "application/json"),
                   ("Content-Length", str(len(body)))], body)
    assert r.status == 200


def test_read_token_guards_reads_but_not_health_metrics_or_the_page(backends, proxies):
    token = "s3cret-token"
    p = proxies(f"admin:\n  listen: 127.0.0.1:0\n  token: {token}\n  read_token: true\n")
    auth = [("Authorization", "Bearer " + token)]
    for path in ("/v1/services", "/v1/dashboard", "/v1/events?format=json", "/v1/catalog"):
        assert admin(p.admin, "GET", path)[0] == 401, path
        assert admin(p.admin, "GET", path, headers=auth)[0] == 200, path
    c = Client(p.admin)
    assert c.request("GET", "/v1/events", "admin").status == 401
    for path in ("/healthz", "/readyz", "/metrics", "/ui/", "/ui/app.js"):
        assert admin(p.admin, "GET", path)[0] == 200, path


def test_read_token_without_a_token_is_a_config_error(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("admin:\n  listen: 127.0.0.1:0\n  read_token: true\n")
    r = subprocess.run([BIN, "--check", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1
    assert re.search(r"s\.yaml:3:\d+: 'admin.read_token' is true but admin.token is empty", r.stdout + r.stderr)


def test_the_page_and_the_event_stream_over_an_admin_listener_with_tls(backends, proxies):
    # The same over TLS (admin.tls): the page, and a stream whose frames go out encrypted in batches.
    from harness import tls_client_context, tls_run
    ca, cert, key = tls_run()
    p = proxies(f"admin:\n  listen: 127.0.0.1:0\n  tls:\n    certificates:\n      - {{ cert: {cert}, key: {key} }}\n")
    ctx = tls_client_context(ca)
    c = Client(p.admin, context=ctx)
    r = c.request("GET", "/ui/", "admin")
    assert r.status == 200 and "default-src 'self'" in r.header("content-security-policy")
    raw = socket.create_connection(tuple(p.admin))
    s = ctx.wrap_socket(raw)
    s.settimeout(30)
    s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: admin\r\n\r\n")
    sse = Sse(s)
    assert "text/event-stream" in sse.head
    b = backends()
    for i in range(50):  # more than one write batch (16 frames)
        c.request("PUT", f"/v1/services/t/instances/i{i}", "admin", [("Content-Type", "application/json"),
                  ("Content-Length", str(len(json.dumps({"address": b.address, "ttl": "0s"}))))], json.dumps({"address": b.address, "ttl": "0s"}).encode())
    got = [sse.next_of("registry")["json"]["instance"] for _ in range(50)]
    assert got == [f"i{i}" for i in range(50)]
    s.close()
