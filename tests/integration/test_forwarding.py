"""The data path as an HTTP/1.1 intermediary: routing, keep-alive, pipelining, framing, headers."""
import re
import socket
import subprocess

import pytest

from conftest import service_config
from harness import Client, TcpServer, admin, base_url, curl_tls_args, forwarded_proto, free_port, get, request_bytes, respond, wait_until


def config_for(backends, name="svc", extra="", top=""):
    return top + "services:\n" + service_config(name, backends, extra)


def test_round_robin_between_two_backends_with_curl(backends, proxies):
    a, b = backends(name="a"), backends(name="b")
    p = proxies(config_for([a, b], "demo"))
    seen = []
    for _ in range(4):
        out = subprocess.run(["curl", "-s", *curl_tls_args(), "-H", "Host: demo", f"{base_url(p)}/hi"],
                             capture_output=True, check=True, timeout=10)
        seen.append(out.stdout.decode().split()[0])
    # Strict alternation between the two (which one starts depends on instance order).
    assert set(seen) == {"a", "b"} and seen[0] != seen[1] and seen[0::2] == [seen[0]] * 2 and seen[1::2] == [seen[1]] * 2


def test_explicit_route_by_path_prefix_and_strip(backends, proxies):
    api, web = backends(name="api"), backends(name="web")
    cfg = f"""
routes:
  - match: {{ host: shop.example, path_prefix: /api }}
    service: api
    strip_prefix: true
  - match: {{ path_prefix: /static }}
    service: web
services:
{service_config("api", [api])}{service_config("web", [web])}"""
    p = proxies(cfg)
    r = get(p.addr, "/api/orders?id=1", host="shop.example:8080")
    assert r.status == 200 and r.body == b"api GET /orders?id=1"
    r = get(p.addr, "/api", host="shop.example")
    assert r.body == b"api GET /"
    r = get(p.addr, "/static/x.css", host="anything")
    assert r.body == b"web GET /static/x.css"
    # "/apix" is not under "/api"; Host falls back to service name lookup, which fails.
    r = get(p.addr, "/apix", host="shop.example")
    assert r.status == 404
    # Host = service name when no route matches.
    assert get(p.addr, "/x", host="web").body == b"web GET /x"


def test_keep_alive_reuses_client_and_upstream_connections(backends, proxies):
    b = backends()
    p = proxies(config_for([b]))
    c = Client(p.addr)
    for i in range(5):
        r = c.request(path=f"/{i}")
        assert r.status == 200 and r.body == f"b0 GET /{i}".encode()
    c.close()
    assert b.connections == 1


def test_pipelined_requests_answered_in_order(backends, proxies):
    b = backends()
    p = proxies(config_for([b]))
    c = Client(p.addr)
    c.send(b"".join(request_bytes(path=f"/p{i}") for i in range(10)))
    for i in range(10):
        r = c.reader.read_response()
        assert r.body == f"b0 GET /p{i}".encode()
    # A pipelined mix with an unroutable one in the middle keeps order too.
    c.send(request_bytes(path="/x") + request_bytes(path="/y", host="nosuch") + request_bytes(path="/z"))
    assert c.reader.read_response().body == b"b0 GET /x"
    assert c.reader.read_response().status == 404
    assert c.reader.read_response().body == b"b0 GET /z"
    c.close()


def test_http10_client_gets_close_delimited_or_length_response(backends, proxies):
    def chunked(conn, req, _):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        return True

    b = backends(chunked)
    p = proxies(config_for([b]))
    c = Client(p.addr)
    c.send(b"GET / HTTP/1.0\r\nHost: svc\r\n\r\n")
    head = c.reader.read_until(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    assert c.reader.read_to_eof() == b"hello"
    c.close()
    # HTTP/1.0 with keep-alive and a length-delimited response stays open.
    b2 = backends()
    p2 = proxies(config_for([b2]))
    c = Client(p2.addr)
    for _ in range(2):
        c.send(b"GET /k HTTP/1.0\r\nHost: svc\r\nConnection: keep-alive\r\n\r\n")
        r = c.reader.read_response()
        assert r.body == b"b1 GET /k"
        assert r.header("connection").lower() == "keep-alive"
    c.close()


def test_connection_close_from_client_and_from_backend(backends, proxies):
    def closing(conn, req, _):
        respond(conn, 200, b"bye", [("Connection", "close")])
        return False

    b = backends(closing)
    p = proxies(config_for([b]))
    c = Client(p.addr)
    r = c.request(headers=[("Connection", "close")])
    assert r.header("connection") == "close"
    assert c.closed_by_peer()
    # Backend says close: client connection stays usable; next request opens a new upstream one.
    c = Client(p.addr)
    assert c.request().body == b"bye"
    assert c.request().body == b"bye"
    c.close()
    assert b.connections == 3


def test_request_bodies_content_length_and_chunked(backends, proxies):
    def echo(conn, req, _):
        respond(conn, 200, req.body, [("X-Got-TE", req.header("transfer-encoding", "-")),
                                      ("X-Got-CL", req.header("content-length", "-"))])
        return True

    b = backends(echo)
    p = proxies(config_for([b]))
    c = Client(p.addr)
    r = c.request("POST", body=b"x" * 100000)
    assert r.body == b"x" * 100000 and r.header("x-got-cl") == "100000"
    c.send(b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    r = c.reader.read_response()
    assert r.body == b"hello world" and r.header("x-got-te") == "chunked"
    c.close()


def test_response_framings_are_rewritten(backends, proxies):
    def until_close(conn, req, _):
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        return False

    b = backends(until_close)
    p = proxies(config_for([b]))
    c = Client(p.addr)
    r = c.request()
    assert r.body == b"all of it"
    assert r.header("transfer-encoding") == "chunked"  # re-framed for the 1.1 client
    assert c.request().body == b"all of it"  # and the client connection survives
    c.close()


def test_head_204_304_have_no_body_and_keep_alive(backends, proxies):
    def h(conn, req, _):
        if req.target == "/204":
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        elif req.target == "/304":
            conn.sendall(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"x\"\r\n\r\n")
        elif req.method == "HEAD":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        else:
            respond(conn, 200, b"ok")
        return True

    b = backends(h)
    p = proxies(config_for([b]))
    c = Client(p.addr)
    r = c.request("HEAD")
    assert r.status == 200 and r.header("content-length") == "1234" and r.body == b""
    assert c.request(path="/204").status == 204
    r = c.request(path="/304")
    assert r.status == 304 and r.header("content-length") == "50"
    assert c.request().body == b"ok"  # framing intact after all three
    c.close()


def test_expect_100_continue(backends, proxies):
    # The backend parser reads the whole request; emulate a 100-continue-aware backend by hand.
    def serve(conn, reader):
        data = reader.read_until(b"\r\n\r\n")
        assert b"100-continue" in data.lower()
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = reader.read_exact(5)
        respond(conn, 200, b"got " + body)
        conn.recv(1)

    srv = TcpServer(serve)
    p = proxies(f"services:\n  svc:\n    instances:\n      - {{ address: {srv.address} }}\n")
    c = Client(p.addr)
    c.send(b"POST / HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    interim = c.reader.read_until(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100")
    c.send(b"hello")
    r = c.reader.read_response()
    assert r.status == 200 and r.body == b"got hello"
    c.close()
    srv.stop()


def test_websocket_upgrade_tunnels_both_ways(backends, proxies):
    def ws(conn, req, _):
        assert req.header("upgrade") == "websocket"
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        buf = req.reader.buf
        while True:
            if buf:
                conn.sendall(b"echo:" + buf)
                buf = b""
            data = conn.recv(4096)
            if not data:
                return False
            buf = data

    b = backends(ws)
    p = proxies(config_for([b]))
    c = Client(p.addr)
    c.send(b"GET /ws HTTP/1.1\r\nHost: svc\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = c.reader.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101") and b"upgrade: websocket" in head.lower()
    for msg in (b"ping", b"second frame"):
        c.send(msg)
        got = c.reader.read_exact(5 + len(msg))
        assert got == b"echo:" + msg
    c.close()


@pytest.mark.http1
def test_forwarding_headers_and_hop_by_hop_removed(backends, proxies):
    b = backends()
    p = proxies(config_for([b]))
    r = get(p.addr, "/h", headers=[("Connection", "keep-alive, X-Secret"), ("X-Secret", "1"), ("Keep-Alive", "timeout=5"),
                                   ("TE", "trailers"), ("Proxy-Authorization", "Basic x"), ("Proxy-Connection", "x"),
                                   ("X-Forwarded-For", "10.1.1.1"), ("Via", "1.1 edge"), ("X-Keep", "yes")])
    assert r.status == 200
    seen = b.requests[-1]
    names = {k.lower() for k, _ in seen.headers}
    for dropped in ("x-secret", "keep-alive", "te", "proxy-authorization", "proxy-connection", "connection"):
        assert dropped not in names, dropped
    assert seen.header("x-keep") == "yes"
    assert seen.header("x-forwarded-for") == "10.1.1.1, 127.0.0.1"
    assert seen.header("x-forwarded-proto") == forwarded_proto(p)
    assert seen.header("x-forwarded-host") == "svc"
    assert re.fullmatch(r"1\.1 edge, 1\.1 switchyard \([0-9a-f]{16}\)", seen.header("via")), seen.header("via")
    rid = seen.header("x-request-id")
    assert rid and len(rid) == 32
    assert r.header("via").endswith("1.1 switchyard")
    get(p.addr, "/h", headers=[("X-Request-Id", "abc-123")])
    assert b.requests[-1].header("x-request-id") == "abc-123"
    get(p.addr, "/h")
    assert b.requests[-1].header("x-request-id") != rid  # generated ids differ


def test_own_error_responses_have_json_and_header(backends, proxies):
    dead_port = free_port()  # nothing listens there: connection refused
    cfg = f"""
services:
  empty: {{}}
  down:
    instances:
      - {{ address: 127.0.0.1:{dead_port} }}
"""
    p = proxies(cfg)
    r = get(p.addr, "/", host="unknown")
    assert r.status == 404 and r.header("x-switchyard-error") == "no_route" and r.json()["error"] == "no_route"
    r = get(p.addr, "/", host="empty")
    assert r.status == 503 and r.json()["error"] == "no_healthy_upstream"
    r = get(p.addr, "/", host="down")
    assert r.status == 502 and r.json()["error"] == "upstream_failed" and r.header("x-switchyard-error") == "upstream_failed"


def test_backend_closing_idle_pooled_connection_is_never_reused(backends, proxies):
    # The backend answers keep-alive, then closes the idle connection after a moment.
    def h(conn, req, _):
        respond(conn, 200, b"ok")
        return False  # close after answering, without saying so

    b = backends(h)
    p = proxies(config_for([b]))
    assert get(p.addr).body == b"ok"
    # The proxy sees the FIN on the idle pooled connection; every later request still works.
    for _ in range(5):
        assert get(p.addr).body == b"ok"
    assert b.connections == 6


def dies_on_second_request(state):
    """A backend handler that answers, then drops the second request (on the reused connection)
    without a byte. state["n"] counts requests seen."""

    def h(conn, req, _):
        state["n"] += 1
        if state["n"] == 2:
            conn.shutdown(socket.SHUT_RDWR)
            return False
        respond(conn, 200, b"ok")
        return True

    return h


def test_idempotent_request_resent_when_pooled_connection_dies_under_it(backends, proxies):
    b = backends(dies_on_second_request({"n": 0}))
    p = proxies(config_for([b]))
    c = Client(p.addr)
    assert c.request().body == b"ok"
    r = c.request()  # GET on the reused connection that dies → resent once on a fresh one
    assert r.status == 200 and r.body == b"ok"
    c.close()
    assert b.connections == 2


def test_non_idempotent_request_not_resent(backends, proxies):
    state = {"n": 0}
    b = backends(dies_on_second_request(state))
    p = proxies(config_for([b]))
    c = Client(p.addr)
    assert c.request().body == b"ok"
    r = c.request("POST", body=b"data")
    assert r.status == 502
    c.close()
    assert state["n"] == 2


def test_wrk_load_has_no_errors(backends, proxies):
    import shutil
    if not shutil.which("wrk"):
        import pytest
        pytest.skip("wrk not installed (deploy/install-deps.sh installs it)")
    b1, b2 = backends(), backends()
    p = proxies(config_for([b1, b2]))
    out = subprocess.run(["wrk", "-t1", "-c8", "-d2s", "-H", "Host: svc", f"{base_url(p)}/"],
                         capture_output=True, text=True, timeout=30).stdout
    assert "requests in" in out, out
    assert "Non-2xx" not in out and "Socket errors" not in out, out


def test_idle_pooled_connections_to_a_deregistered_instance_close_and_only_those(backends, proxies):
    """HTTP/1.1, plain. The workers close pooled connections to what left the registry (from the
    snapshot's log of departures), and keep those to the instances that stay."""
    a, b = backends(name="a"), backends(name="b")
    p = proxies("services:\n  s: {}\n")
    for name, bk in (("a", a), ("b", b)):
        assert admin(p.admin, "PUT", f"/v1/services/s/instances/{name}", {"address": bk.address})[0] == 201
    seen = set()
    for _ in range(40):
        r = get(p.addr, host="s")
        assert r.status == 200
        seen.add(r.body.split()[0])
        if seen == {b"a", b"b"}:
            break
    assert seen == {b"a", b"b"}
    wait_until(lambda: a.connections >= 1 and b.connections >= 1, 30, what="both pooled")
    assert a.closed == 0 and b.closed == 0  # idle in the pool
    assert admin(p.admin, "DELETE", "/v1/services/s/instances/b")[0] == 204
    wait_until(lambda: b.closed == b.connections, 30, what="b's pooled connections closed")
    assert a.closed == 0, "a's pooled connection was closed too"
    assert get(p.addr, host="s").body.startswith(b"a ")
