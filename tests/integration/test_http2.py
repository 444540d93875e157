"""HTTP/2 from clients (README.md, "HTTP/2"): prior knowledge on plain listeners, ALPN h2 on TLS
listeners, each stream an exchange forwarded to HTTP/1.1 instances; flow control bounding memory;
smuggling cases refused; floods ended with GOAWAY; GOAWAY on shutdown.

Covers: HTTP/2 over plaintext (prior knowledge) and over TLS (ALPN), against HTTP/1.1 backends.
Clients: python3-h2 (scripted frames, hostile ones too), curl, h2load (nghttp2-client).
"""
import hashlib
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
import trustme
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame

from conftest import holding_backend, service_config
from harness import Backend, Client, H2Client, TcpServer, admin, get, metric, respond, tls_client_context, wait_until

pytestmark = pytest.mark.plaintext  # (TLS is covered here, by its own listeners)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def echo_app(conn, req, backend):
    """Answers with the length and sha256 of the request body it read (any framing)."""
    body = req.body
    respond(conn, 200, json.dumps({"len": len(body), "sha": hashlib.sha256(body).hexdigest(),
                                   "te": req.header("transfer-encoding"), "cl": req.header("content-length")}).encode())
    return True


def test_prior_knowledge_request_goes_up_as_http11(backends, proxies, tmp_path):
    b = backends()
    log = tmp_path / "access.log"
    p = proxies(f"access_log: {log}\nservices:\n" + service_config("svc", [b]))
    c = H2Client(p.addr)
    sid = c.request("GET", "/a/b?x=1", host="svc", headers=[("cookie", "a=1"), ("cookie", "b=2"), ("x-custom", "yes")])
    r = c.response(sid)
    assert r.status == 200 and r.body == b"b0 GET /a/b?x=1"
    assert "switchyard" in r.header("via")
    # Many streams on the one connection, answered in any order.
    sids = [c.request("GET", f"/n{i}", host="svc") for i in range(20)]
    assert [c.response(s).body for s in sids] == [f"b0 GET /n{i}".encode() for i in range(20)]
    c.close()
    req = b.requests[0]
    assert req.start == "GET /a/b?x=1 HTTP/1.1"
    assert req.header("host") == "svc"
    assert req.header("cookie") == "a=1; b=2"  # crumbs joined (RFC 9113 §8.2.3)
    assert req.header("x-custom") == "yes"
    assert req.header("x-forwarded-for") == "127.0.0.1" and req.header("x-forwarded-proto") == "http"
    assert "2.0 switchyard" in req.header("via")
    # curl's prior knowledge too, and the access log says which protocol.
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-H", "Host: svc", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                          f"http://127.0.0.1:{p.addr[1]}/c"], capture_output=True, text=True, timeout=30).stdout
    assert out == "2 200", out
    wait_until(lambda: log.exists() and log.read_text().count('"protocol":"HTTP/2.0"') >= 22, 10, what="access log lines")
    assert '"error"' not in log.read_text()
    # HTTP/1.1 on the same port is unchanged.
    assert get(p.addr, "/h1", host="svc").body == b"b0 GET /h1"
    # switchyard_requests_total says which protocol each answer went out on.
    wait_until(lambda: metric(p, "switchyard_requests_total", service="svc", protocol="http1") == 1, 10, what="the HTTP/1.1 answer counted")
    assert metric(p, "switchyard_requests_total", service="svc", code="200", protocol="h2") == 22


def trailers_app(conn, req, backend):
    """Answers chunked with a trailer section (and hop-by-hop fields in it that must not travel);
    the body says which request trailers arrived."""
    got = ",".join(f"{k.lower()}={v}" for k, v in req.trailers)
    body = f"got[{got}]".encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n"
                 + b"%x\r\n" % len(body) + body + b"\r\n"
                 + b"0\r\nX-Checksum: abc\r\nGrpc-Status: 0\r\nConnection: x-checksum\r\nTransfer-Encoding: gzip\r\n\r\n")
    return True


def test_trailers_relayed_both_ways(backends, proxies, tmp_path):
    """Response trailers to HTTP/1.1 (plaintext, in the last chunk) and HTTP/2 (plaintext, prior
    knowledge: a trailing HEADERS) clients; request trailers from HTTP/2 clients (python3-h2 and
    nghttp) up in the last chunk."""
    b = backends(trailers_app)
    p = proxies("services:\n" + service_config("svc", [b]))
    # HTTP/1.1 client.
    c = Client(p.addr)
    r = c.request("GET", "/t", "svc", [("TE", "trailers")])
    c.close()
    assert r.status == 200 and r.body == b"got[]"
    assert r.trailer("x-checksum") == "abc" and r.trailer("grpc-status") == "0"
    assert r.trailer("transfer-encoding") is None and r.trailer("connection") is None
    # HTTP/2 client: response trailers, and its own trailers go up with the chunked body.
    c = H2Client(p.addr)
    sid = c.request("POST", "/up", host="svc", headers=[("te", "trailers")], end=False)
    c.send_body(sid, b"payload", end=False)
    c.send_trailers(sid, [("x-sum", "42"), ("grpc-timeout", "1S")])
    r = c.response(sid)
    assert r.status == 200 and r.body == b"got[x-sum=42,grpc-timeout=1S]", r.body
    assert dict(r.trailers) == {"x-checksum": "abc", "grpc-status": "0"}
    up = b.requests[-1]
    assert up.header("transfer-encoding") == "chunked" and up.body == b"payload"
    c.close()
    # nghttp (nghttp2's client): many streams, and trailers with a request body.
    data = tmp_path / "data"
    data.write_bytes(b"z" * 1000)
    out = subprocess.run(["nghttp", "-v", "-n", "--no-content-length", "-d", str(data), "--trailer", "x-from: nghttp",
                          "-H", ":authority: svc", f"http://127.0.0.1:{p.addr[1]}/n"],
                         capture_output=True, text=True, timeout=60).stdout
    assert "x-checksum: abc" in out and "grpc-status: 0" in out, out
    assert b.requests[-1].trailer("x-from") == "nghttp" and len(b.requests[-1].body) == 1000
    many = subprocess.run(["nghttp", "-n", "-s", "-m", "50", "-H", ":authority: svc", f"http://127.0.0.1:{p.addr[1]}/m"],
                          capture_output=True, text=True, timeout=120)
    assert many.returncode == 0, many.stderr
    assert sum(1 for r in b.requests if r.target == "/m") == 50


def test_interim_responses_relayed_over_http2(proxies):
    """100 Continue reaches an HTTP/2 client (plaintext, prior knowledge) that holds its body back
    until it comes; 103 Early Hints with its Link field too, each a HEADERS frame before the final
    one."""
    def serve(conn, reader):
        head = reader.read_until(b"\r\n\r\n")
        assert b"expect: 100-continue" in head.lower(), head
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = reader.read_exact(5)
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        respond(conn, 200, b"got " + body)
        conn.recv(1)

    srv = TcpServer(serve)
    p = proxies(f"services:\n  svc:\n    instances:\n      - {{ address: {srv.address} }}\n")
    c = H2Client(p.addr)
    sid = c.request("POST", "/", host="svc", headers=[("expect", "100-continue"), ("content-length", "5")], end=False)
    assert [st for st, _ in c.interim(sid)] == [100]  # before a byte of the body was sent
    c.send_body(sid, b"hello")
    r = c.response(sid)
    assert r.status == 200 and r.body == b"got hello"
    interim = c.streams[sid]["interim"]
    assert [st for st, _ in interim] == [100, 103]
    assert dict(interim[1][1])["link"] == "</style.css>; rel=preload"
    c.close()
    srv.stop()


def test_proxy_errors_and_limits_over_http2(backends, proxies):
    b = backends()
    p = proxies("client: { max_header_bytes: 4096 }\nhttp2: { max_concurrent_streams: 7 }\nservices:\n" + service_config("svc", [b]))
    c = H2Client(p.addr)
    r = c.response(c.request(host="nowhere"))
    assert r.status == 404 and r.header("x-switchyard-error") == "no_route"
    assert json.loads(r.body)["error"] == "no_route"
    assert c.settings.get(3) == 7  # SETTINGS_MAX_CONCURRENT_STREAMS as configured
    r = c.response(c.request(host="svc", headers=[("x-big", "v" * 6000)]))
    assert r.status == 431
    # The connection is still good.
    assert c.response(c.request(host="svc")).status == 200
    c.close()


def test_alpn_h2_on_tls_and_http2_false(backends, proxies, tmp_path):
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key, ca_path = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_path))
    b = backends()
    listen = ("listen:\n"
              f"  - address: 127.0.0.1:0\n    tls: {{ certificates: [{{ cert: {cert}, key: {key} }}] }}\n")
    p = proxies(listen + "services:\n" + service_config("svc", [b]))
    c = H2Client(p.addr, context=tls_client_context(str(ca_path)))
    r = c.response(c.request("GET", "/t", host="svc"))
    assert r.status == 200 and r.body == b"b0 GET /t"
    assert b.requests[-1].header("x-forwarded-proto") == "https"
    c.close()
    out = subprocess.run(["curl", "-s", "--http2", "--cacert", str(ca_path), "-H", "Host: svc", "-o", "/dev/null", "-w", "%{http_version}",
                          f"https://127.0.0.1:{p.addr[1]}/"], capture_output=True, text=True, timeout=30).stdout
    assert out == "2", out
    # http2: false — ALPN offers http/1.1 only, and a preface on a plain port is not HTTP/2.
    p2 = proxies("listen:\n"
                 f"  - {{ address: 127.0.0.1:0, http2: false, tls: {{ certificates: [{{ cert: {cert}, key: {key} }}] }} }}\n"
                 "services:\n" + service_config("svc", [b]))
    out = subprocess.run(["curl", "-s", "--http2", "--cacert", str(ca_path), "-H", "Host: svc", "-o", "/dev/null", "-w", "%{http_version}",
                          f"https://127.0.0.1:{p2.addr[1]}/"], capture_output=True, text=True, timeout=30).stdout
    assert out == "1.1", out
    p3 = proxies("listen:\n  - { address: 127.0.0.1:0, http2: false }\nservices:\n" + service_config("svc", [b]))
    s = socket.create_connection(p3.addr, timeout=10)
    s.sendall(PREFACE)
    assert s.recv(100).startswith(b"HTTP/1.1 400")
    s.close()
    # Config errors, with their position.
    from harness import BIN
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen:\n  - address: 127.0.0.1:0\n    http2: false\n"
                   f"    tls: {{ certificates: [{{ cert: {cert}, key: {key} }}], alpn: [h2, http/1.1] }}\n")
    out = subprocess.run([BIN, "--check", "-c", str(bad)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert re.search(r"bad.yaml:3:\d+: 'listen.http2' is false but 'listen.tls.alpn' offers h2", out.stdout + out.stderr), out
    bad.write_text(f"admin: {{ listen: 127.0.0.1:0, tls: {{ certificates: [{{ cert: {cert}, key: {key} }}], alpn: [h2] }} }}\n")
    out = subprocess.run([BIN, "--check", "-c", str(bad)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "admin listener serves http/1.1 only" in out.stdout + out.stderr, out


@pytest.mark.skipif(not shutil.which("h2load"), reason="h2load (nghttp2-client) is not installed")
def test_h2load_ten_thousand_streams(backends, proxies):
    b = backends()
    p = proxies("services:\n" + service_config("svc", [b]))
    out = subprocess.run(["h2load", "-n", "10000", "-c", "10", "-m", "10", "-H", ":authority: svc", f"http://127.0.0.1:{p.addr[1]}/"],
                         capture_output=True, text=True, timeout=600).stdout
    assert re.search(r"requests: 10000 total, 10000 started, 10000 done, 10000 succeeded, 0 failed", out), out
    assert "status codes: 10000 2xx" in out, out


def test_bodies_both_ways(backends, proxies):
    big = bytes(range(256)) * (4 * 4096)  # 4 MiB

    def app(conn, req, backend):
        if req.target == "/download":
            respond(conn, 200, big)
            return True
        return echo_app(conn, req, backend)

    b = backends(app)
    p = proxies("services:\n" + service_config("svc", [b]))
    c = H2Client(p.addr)
    # With a content-length: sent with it; without one: chunked to the HTTP/1.1 instance.
    sid = c.request("POST", "/up", host="svc", headers=[("content-length", str(len(big)))], body=big)
    got = json.loads(c.response(sid).body)
    assert got == {"len": len(big), "sha": hashlib.sha256(big).hexdigest(), "te": None, "cl": str(len(big))}
    sid = c.request("POST", "/up", host="svc", body=big)
    got = json.loads(c.response(sid).body)
    assert got["len"] == len(big) and got["sha"] == hashlib.sha256(big).hexdigest() and got["te"] == "chunked"
    r = c.response(c.request("GET", "/download", host="svc"))
    assert r.status == 200 and r.body == big and r.header("content-length") == str(len(big))
    c.close()


def test_windows_bound_memory_slow_backend_and_slow_reader(backends, proxies):
    """A 48 MiB upload to a backend that reads 256 KiB every 10 ms, and a 48 MiB download to a
    client that stops reading: the proxy holds about the windows, not the bodies."""
    size = 48 * 1024 * 1024
    chunk = b"u" * (1 << 20)

    def app(conn, req, backend):
        if req.target == "/down":
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
            for _ in range(size // len(chunk)):
                conn.sendall(chunk)
            return True
        n = int(req.header("content-length"))
        got = 0
        while got < n:  # the harness left the body unread (streamed=True below)
            data = req.reader.read_exact(min(256 * 1024, n - got))
            got += len(data)
            time.sleep(0.01)
        respond(conn, 200, str(got).encode())
        return True

    b = backends(app)
    b.stream_bodies = True
    p = proxies("services:\n" + service_config("svc", [b]))
    assert get(p.addr, "/warm", host="svc", method="POST", body=b"x" * 10).status == 200
    base = p.rss_kb()
    c = H2Client(p.addr, timeout=120)
    body = b"x" * size
    sid = c.request("POST", "/up", host="svc", headers=[("content-length", str(size))], body=body)
    peak = p.rss_kb()
    r = c.response(sid)
    assert r.status == 200 and r.body == str(size).encode()
    assert peak - base < 16 * 1024, f"RSS grew {peak - base} KiB during a 48 MiB upload"
    # The slow reader: nothing acknowledged, so the proxy may send one stream window.
    c2 = H2Client(p.addr, timeout=120)
    sid = c2.request("GET", "/down", host="svc")
    while c2.streams[sid]["status"] is None or len(c2.streams[sid]["body"]) < 65535:
        c2._read_once(ack=False)
    c2.sock.settimeout(0.5)
    try:
        while True:
            c2._read_once(ack=False)  # whatever is in flight
    except socket.timeout:
        pass
    held = len(c2.streams[sid]["body"])
    assert held <= 65535, held  # the stream window, not the body
    assert p.rss_kb() - base < 16 * 1024
    c2.sock.settimeout(120)
    c2.conn.acknowledge_received_data(held, sid)  # reading again: the window opens
    c2.flush()
    while not c2.streams[sid]["ended"]:
        c2._read_once(ack=True)
    assert len(c2.streams[sid]["body"]) == size
    c.close()
    c2.close()


def smuggle_attempt(p, headers, data=None, end_headers=True):
    """Sends one request with `headers` (as written) and optional DATA; returns the stream's fate."""
    c = H2Client(p.addr)
    sid = c.conn.get_next_available_stream_id()
    c.streams[sid] = {"status": None, "headers": [], "body": bytearray(), "ended": False, "reset": None}
    c.conn.send_headers(sid, headers, end_stream=data is None)
    if data is not None:
        c.conn.send_data(sid, data, end_stream=True)
    c.flush()
    try:
        r = c.response(sid)
        fate = ("status", r.status)
    except ConnectionResetError:
        fate = ("reset", c.streams[sid]["reset"])
    except EOFError:
        fate = ("closed", None)
    c.close()
    return fate


def test_smuggling_cases_are_refused_never_forwarded(backends, proxies):
    b = backends(echo_app)
    p = proxies("services:\n" + service_config("svc", [b]))
    base = [(":method", "POST"), (":path", "/s"), (":scheme", "http"), (":authority", "svc")]
    cases = {
        "transfer-encoding": (base + [("transfer-encoding", "chunked")], b"0\r\n\r\n"),
        "connection header": (base + [("connection", "keep-alive")], b"x"),
        "te other than trailers": (base + [("te", "gzip")], b"x"),
        "uppercase name": (base + [("X-Upper", "1")], b"x"),
        "CR LF in a value": (base + [("x-a", "1\r\nx-injected: 2")], b"x"),
        "NUL in a value": (base + [("x-a", "1\x002")], b"x"),
        "pseudo-header after a regular one": ([(":method", "POST"), (":scheme", "http"), ("x-a", "1"), (":path", "/s"), (":authority", "svc")], b"x"),
        "repeated :path": (base + [(":path", "/t")], b"x"),
        "missing :path": ([(":method", "GET"), (":scheme", "http"), (":authority", "svc")], None),
        "more DATA than content-length": (base + [("content-length", "3")], b"0123456789"),
    }
    for name, (headers, data) in cases.items():
        fate = smuggle_attempt(p, headers, data)
        assert fate[0] in ("reset", "closed") or fate == ("status", 400), (name, fate)
    # Nothing reached the backend (its requests would show a body or a header of the above).
    assert b.requests == [], [r.start for r in b.requests]
    c = H2Client(p.addr)
    assert c.response(c.request("POST", "/ok", host="svc", body=b"fine")).status == 200
    c.close()


def flood(p, opening, frame, count):
    """PREFACE + SETTINGS + `opening`, then `count` × `frame` on a raw socket; returns the error code
    of the proxy's GOAWAY (None if it sent none)."""
    s = socket.create_connection(p.addr, timeout=10)
    s.sendall(PREFACE + SettingsFrame(0).serialize() + opening)
    blob = frame.serialize() * 50
    try:
        for _ in range(count // 50):
            s.sendall(blob)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return goaway_in(read_until_closed(s))


def read_until_closed(s, timeout=10):
    """Everything the proxy sends until it closes (or resets) the connection, or `timeout` of
    silence; closes `s`."""
    data = b""
    s.settimeout(timeout)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    return data


def test_floods_end_only_the_offending_connection(backends, proxies):
    b = backends()
    p = proxies("http2: { max_control_frames_per_second: 50 }\nservices:\n" + service_config("svc", [b]))
    good = H2Client(p.addr)
    assert good.response(good.request(host="svc")).status == 200
    import hpack
    enc = hpack.Encoder()
    hpack_req = enc.encode([(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "svc")])

    def rapid_reset():
        out = []
        for sid in range(1, 2 * 2000, 2):
            h = HeadersFrame(sid, hpack.Encoder().encode([(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "svc")]))
            h.flags.add("END_HEADERS")
            h.flags.add("END_STREAM")
            out += [h, RstStreamFrame(sid, error_code=8)]
        return out

    h = HeadersFrame(1, hpack_req)
    h.flags.add("END_HEADERS")
    floods = {
        "ping": (b"", PingFrame(0, b"12345678")),
        "settings": (b"", SettingsFrame(0)),
        "empty data": (h.serialize(), DataFrame(1, b"")),
    }
    for name, (opening, frame) in floods.items():
        assert flood(p, opening, frame, 5000) == 11, name  # GOAWAY ENHANCE_YOUR_CALM
    rr = rapid_reset()
    s = socket.create_connection(p.addr, timeout=10)
    s.sendall(PREFACE + SettingsFrame(0).serialize())
    try:
        s.sendall(b"".join(f.serialize() for f in rr))
    except (BrokenPipeError, ConnectionResetError):
        pass
    got = read_until_closed(s)
    # nghttp2's own stream-reset rate limit (CVE-2023-44487) says INTERNAL_ERROR; our bucket says
    # ENHANCE_YOUR_CALM: whichever comes first.
    assert goaway_in(got) in (2, 11), f"rapid reset was not cut with GOAWAY: {goaway_in(got)}"
    # CONTINUATION without END_HEADERS, forever (CVE-2024-28182): cut.
    s = socket.create_connection(p.addr, timeout=10)
    s.sendall(PREFACE + SettingsFrame(0).serialize())
    h = HeadersFrame(1, hpack_req)
    cont = ContinuationFrame(1, hpack.Encoder().encode([("x-a", "b" * 100)]))
    try:
        s.sendall(h.serialize())
        for _ in range(2000):
            s.sendall(cont.serialize())
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.settimeout(10)
    closed = False
    try:
        while True:
            if not s.recv(65536):
                closed = True
                break
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        pass
    s.close()
    assert closed, "a CONTINUATION flood was not cut"
    # The good connection never noticed; the flood metric did.
    assert good.response(good.request(host="svc")).status == 200
    good.close()
    assert metric(p, "switchyard_http2_goaway_total", reason="flood") >= 3
    # RSS did not run away (nothing buffered per flood frame).
    assert p.rss_kb() < 200 * 1024


def goaway_in(data):
    """The error code of the first GOAWAY among raw frames, or None."""
    i = 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i:i + 3], "big")
        if data[i + 3] == 7:
            return int.from_bytes(data[i + 13:i + 17], "big")
        i += 9 + length
    return None


def test_incomplete_head_is_cut_at_header_timeout(backends, proxies):
    """HEADERS without END_HEADERS and no CONTINUATION (slowloris over HTTP/2)."""
    import hpack
    b = backends()
    p = proxies("client: { header_timeout: 300ms }\nservices:\n" + service_config("svc", [b]))
    s = socket.create_connection(p.addr, timeout=30)
    h = HeadersFrame(1, hpack.Encoder().encode([(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "svc")]))
    s.sendall(PREFACE + SettingsFrame(0).serialize() + h.serialize())
    data = read_until_closed(s, timeout=30)
    assert goaway_in(data) == 0
    assert metric(p, "switchyard_http2_goaway_total", reason="header_timeout") == 1
    assert b.requests == []


def test_body_complete_by_content_length_is_replayable_before_end_stream(backends, proxies):
    """The DATA a content-length promised completes the request even when END_STREAM comes later in
    an empty frame: an instance that resets meanwhile gets the request replayed elsewhere."""
    def reset(conn, req, backend):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return False  # (the harness read the whole body first)

    a = backends(reset, name="a")
    b = backends(echo_app, name="b")
    p = proxies("services:\n" + service_config("svc", [a, b], "retry: { attempts: 2, on: [reset, connect-failure] }\n"
                                                 "health_check: { type: none }\noutlier_detection: { consecutive_failures: 1000 }\n"
                                                 "circuit_breaker: { failure_threshold: 1000 }"))
    body = b"x" * 5000
    hit_a = False
    for _ in range(8):  # round robin (per worker): until one try starts at a
        na, closed = len(a.requests), a.closed
        nb = len(b.requests)
        c = H2Client(p.addr)
        sid = c.request("PUT", "/r", host="svc", headers=[("content-length", str(len(body)))], body=body, end=False)
        wait_until(lambda: a.closed > closed or len(b.requests) > nb, 10, what="the first try's outcome")
        hit_a = hit_a or len(a.requests) > na
        c.conn.end_stream(sid)  # only now: the first try failed (or succeeded) before it
        c.flush()
        r = c.response(sid)
        assert r.status == 200 and json.loads(r.body)["len"] == len(body), (r.status, r.body)
        c.close()
        if hit_a:
            break
    assert hit_a, "no try started at the resetting instance"


def test_response_timeout_starts_when_end_stream_comes_alone(backends, proxies):
    """A request whose body went up and drained before the client's END_STREAM (an empty DATA
    frame of its own) still starts timeouts.response then: a backend that never answers gets 504,
    not an exchange that waits forever (HTTP/2 client, HTTP/1.1 instance)."""
    b, release = holding_backend(backends)
    p = proxies("services:\n" + service_config("svc", [b], "timeouts: { response: 1s }\nretry: { attempts: 1 }"))
    try:
        c = H2Client(p.addr)
        body = b"y" * 3000
        sid = c.request("PUT", "/slow", host="svc", headers=[("content-length", str(len(body)))], body=body, end=False)
        wait_until(lambda: len(b.requests) == 1, 30, what="the whole request at the backend")
        c.conn.end_stream(sid)
        c.flush()
        r = c.response(sid)
        assert r.status == 504 and json.loads(r.body)["error"] == "upstream_timeout", (r.status, r.body)
        c.close()
    finally:
        release.set()


def test_client_reset_releases_the_upstream_and_is_logged(backends, proxies, tmp_path):
    b, release = holding_backend(backends)
    log = tmp_path / "access.log"
    p = proxies(f"access_log: {log}\nservices:\n" + service_config("svc", [b]))
    c = H2Client(p.addr)
    sid = c.request(host="svc")
    wait_until(lambda: len(b.requests) == 1, 10, what="the request at the backend")
    assert metric(p, "switchyard_http2_streams_active") == 1
    c.conn.reset_stream(sid, error_code=8)  # CANCEL
    c.flush()
    wait_until(lambda: b.closed >= 1, 10, what="the upstream connection closed")
    wait_until(lambda: metric(p, "switchyard_http2_streams_active") == 0, 10, what="the stream gauge back to 0")
    wait_until(lambda: log.exists() and '"error":"client_reset"' in log.read_text(), 10, what="the access-log line")
    release.set()
    # The connection carries on.
    sid = c.request(host="svc")
    assert c.response(sid).status == 200
    c.close()


def read_frames(sock, until):
    """Raw frames from `sock` (hyperframe), until until(frames) is true or EOF."""
    from hyperframe.frame import Frame
    buf, frames = b"", []
    while not until(frames):
        d = sock.recv(65536)
        if not d:
            break
        buf += d
        while len(buf) >= 9:
            f, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            f.parse_body(memoryview(buf[9:9 + length]))
            frames.append(f)
            buf = buf[9 + length:]
    return frames


def raw_stream_in_flight(p, backend, path):
    """A raw HTTP/2 connection (prior knowledge) with stream 1 (GET `path`) at `backend`."""
    import hpack
    s = socket.create_connection(p.addr, timeout=30)
    h = HeadersFrame(1, hpack.Encoder().encode([(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "svc")]))
    h.flags.add("END_HEADERS")
    h.flags.add("END_STREAM")
    s.sendall(PREFACE + SettingsFrame(0).serialize() + h.serialize())
    wait_until(lambda: any(r.target == path for r in backend.requests), 10, what="the request at the backend")
    return s


def goaway_then_stream_finishes(s, release, body):
    """GOAWAY (no error) naming stream 1, which then gets its whole answer (the backend is let go
    by `release`), then the proxy closes the connection. (Raw frames: python3-h2 treats any GOAWAY
    as the end of the connection.)"""
    from hyperframe.frame import GoAwayFrame
    frames = read_frames(s, lambda fs: any(isinstance(f, GoAwayFrame) for f in fs))
    goaway = [f for f in frames if isinstance(f, GoAwayFrame)][0]
    assert goaway.error_code == 0 and goaway.last_stream_id == 1
    release.set()
    frames += read_frames(s, lambda fs: any(isinstance(f, DataFrame) and "END_STREAM" in f.flags for f in fs))
    assert b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1) == body
    assert s.recv(100) == b""
    s.close()


def test_goaway_on_sigterm_lets_streams_in_flight_finish(backends, proxies):
    b, release = holding_backend(backends, body=b"late")
    p = proxies("services:\n" + service_config("svc", [b]))
    s = raw_stream_in_flight(p, b, "/")
    p.send_signal(signal.SIGTERM)
    goaway_then_stream_finishes(s, release, b"late")
    assert p.proc.wait(30) == 0


def test_reload_sends_goaway_and_new_connections_get_the_new_settings(backends, proxies):
    """Plaintext HTTP/2 (prior knowledge) and an HTTP/1.1 keep-alive connection, across one reload."""
    b, release = holding_backend(backends, body=b"late", only="/slow")

    def cfg(hdr, n):
        return f"client: {{ max_header_bytes: {hdr} }}\nhttp2: {{ max_concurrent_streams: {n} }}\nservices:\n" + service_config("svc", [b])
    p = proxies(cfg(8192, 7))
    h1 = Client(p.addr)
    assert h1.request("GET", "/fast", "svc", [("x-big", "v" * 6000)]).status == 200
    s = raw_stream_in_flight(p, b, "/slow")
    p.write_config(cfg(4096, 5))
    assert admin(p.admin, "POST", "/v1/reload")[0] == 200
    goaway_then_stream_finishes(s, release, b"late")
    # A new connection is told the new limit.
    c = H2Client(p.addr)
    assert c.response(c.request(host="svc", path="/fast")).status == 200
    assert c.settings.get(3) == 5
    c.close()
    wait_until(lambda: metric(p, "switchyard_http2_goaway_total", reason="reload") >= 1, 10, what="the reload GOAWAY counted")
    # The HTTP/1.1 connection stayed up and its next exchange runs under the new header limit.
    assert h1.request("GET", "/fast", "svc", [("x-big", "v" * 6000)]).status == 431
    h1.close()


def test_browser_loads_a_page_of_fifty_resources_over_h2(backends, proxies, tmp_path):
    """Debian's chromium (headless) through a TLS listener: the page and its 50 images all come over
    h2 (the browser's own Resource Timing says which protocol), on one connection."""
    pytest.importorskip("selenium.webdriver")
    from conftest import make_browser
    page = "<!doctype html><title>fifty</title>" + "".join(f'<img src="/img/{i}.svg" width="8" height="8">' for i in range(50))
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>'

    def app(conn, req, backend):
        if req.target.startswith("/img/"):
            respond(conn, 200, svg, headers=[("Content-Type", "image/svg+xml"), ("Cache-Control", "no-store")])
        else:
            respond(conn, 200, page.encode(), headers=[("Content-Type", "text/html")])
        return True

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    log = tmp_path / "access.log"
    b = backends(app)
    p = proxies("listen:\n"
                f"  - address: 127.0.0.1:0\n    tls: {{ certificates: [{{ cert: {cert}, key: {key} }}] }}\n"
                f"access_log: {log}\nservices:\n" + service_config("svc", [b]) + "routes: [{ service: svc }]\n")
    d, cleanup = make_browser(["--ignore-certificate-errors"])  # (the test CA is not in chromium's store)
    try:
        d.get(f"https://127.0.0.1:{p.addr[1]}/")
        wait_until(lambda: d.execute_script("return [...document.images].length === 50 && "
                                            "[...document.images].every(i => i.complete && i.naturalWidth > 0)"),
                   60, what="the 50 images")
        protocols = d.execute_script("return [performance.getEntriesByType('navigation')[0].nextHopProtocol]"
                                     ".concat(performance.getEntriesByType('resource').map(e => e.nextHopProtocol))")
    finally:
        cleanup()
    assert len(protocols) >= 51 and set(protocols) == {"h2"}, protocols
    wait_until(lambda: log.exists() and log.read_text().count('"protocol":"HTTP/2.0"') >= 51, 10, what="51 access-log lines")
    text = admin(p.admin, "GET", "/metrics")[1]
    accepted = sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("switchyard_worker_connections_total{"))
    assert 1 <= accepted <= 3, accepted  # one h2 connection carries them (a browser may open a spare)
