"""Real traffic shapes, slow on purpose: backends that think for seconds, uploads over slow links,
clients that read slowly, event streams, long polls, and clients that stall mid-upload.

Every test runs at `workers: 1` and `workers: 2`, with the default config unless it says
otherwise. Slowness is made here (rate-limited clients and backends that wait), never assumed:
nothing below depends on loopback being fast, only on the proxy's timers doing what
docs/configuration.md says they do. The tests mostly wait, so meson runs this group with
pytest-xdist, all tests side by side.
"""
import hashlib
import json
import re
import select
import ssl
import threading
import time

import pytest

from harness import Client, Reader, TcpServer, respond

MIB = 1 << 20
WORKERS = [1, 2]


def config(workers, backend_addresses, service_extra="", top_extra=""):
    lines = [f"workers: {workers}", top_extra, "services:", "  svc:", "    instances:"]
    lines += [f"      - {{ address: {a} }}" for a in backend_addresses]
    if service_extra:
        lines += ["    " + l for l in service_extra.strip("\n").split("\n")]
    return "\n".join(l for l in lines if l) + "\n"


def pattern(n):
    """n bytes of a fixed, position-dependent pattern (so a reordered or dropped block shows)."""
    block = bytes(range(256)) * (MIB // 256)
    out = bytearray()
    while len(out) < n:
        out += block[: n - len(out)]
    return bytes(out)


class Pacer:
    """Keeps a transfer at `rate` bytes/s: call done(n) after each n bytes."""

    def __init__(self, rate):
        self.rate = rate
        self.start = time.monotonic()
        self.bytes = 0

    def done(self, n):
        self.bytes += n
        ahead = self.bytes / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


def RawBackend(serve):
    """A loopback backend driven by a function serve(conn, reader) per connection."""
    return TcpServer(serve)


@pytest.fixture
def raw_backends():
    made = []

    def make(serve):
        b = RawBackend(serve)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.mark.parametrize("workers", WORKERS)
def test_backend_answering_after_5s(proxies, raw_backends, workers):
    """Default timeouts.response is 30 s and per_try_timeout is off: a GET that takes 5 s is
    answered, not cut at 2 s (and not retried)."""
    seen = []

    def serve(conn, r):
        while True:
            req = r.read_request()
            seen.append(req.target)
            time.sleep(5)  # the backend thinks
            respond(conn, 200, b"thought it over")

    b = raw_backends(serve)
    p = proxies(config(workers, [b.address]))
    t0 = time.monotonic()
    c = Client(p.addr, timeout=60)
    r = c.request("GET", "/think")
    c.close()
    assert r.status == 200, r.body
    assert r.body == b"thought it over"
    assert time.monotonic() - t0 >= 5
    assert seen == ["/think"]


def upload_at(addr, body, rate, path="/upload"):
    c = Client(addr, timeout=120)
    c.send(b"POST %s HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(body)))
    pace = Pacer(rate)
    view = memoryview(body)
    for i in range(0, len(body), 64 * 1024):
        part = view[i:i + 64 * 1024]
        c.sock.sendall(part)
        pace.done(len(part))
    r = c.reader.read_response()
    c.close()
    return r


def hashing_backend(conn, r):
    """Reads each request body as it streams, answers its length and sha256."""
    while True:
        start, headers = r.read_head()
        length = int(dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
        h = hashlib.sha256()
        h.update(r.buf[:length])
        got = min(len(r.buf), length)
        r.buf = r.buf[got:]
        while got < length:
            data = conn.recv(min(MIB, length - got))
            if not data:
                return
            h.update(data)
            got += len(data)
        respond(conn, 200, f"{got} {h.hexdigest()}".encode())


@pytest.mark.parametrize("workers", WORKERS)
def test_upload_30mb_at_5mb_per_s(proxies, raw_backends, workers):
    """A 30 MB upload over a 5 MB/s link takes 6 s: no timer counts the client's sending time."""
    b = raw_backends(hashing_backend)
    p = proxies(config(workers, [b.address]))
    body = pattern(30 * 1000 * 1000)
    t0 = time.monotonic()
    r = upload_at(p.addr, body, 5 * 1000 * 1000)
    assert r.status == 200, r.body
    assert r.body.decode() == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
    assert time.monotonic() - t0 >= 5.5  # it really was slow


@pytest.mark.parametrize("workers", WORKERS)
def test_upload_longer_than_response_timeout(proxies, raw_backends, workers):
    """timeouts.response starts at the request's last byte: a 3 s upload with a 1 s response
    timeout is answered."""
    b = raw_backends(hashing_backend)
    p = proxies(config(workers, [b.address], "timeouts: { response: 1s }"))
    body = pattern(3 * MIB)
    t0 = time.monotonic()
    r = upload_at(p.addr, body, MIB)
    assert r.status == 200, r.body
    assert r.body.decode() == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
    assert time.monotonic() - t0 >= 2.5


@pytest.mark.parametrize("workers", WORKERS)
def test_client_reading_256mib_at_5mb_per_s(proxies, raw_backends, workers):
    """The backend could send 256 MiB at once; the client reads 5 MB/s for ~54 s. Backpressure
    holds (the proxy's memory stays flat) and timeouts.idle does not fire, since the backend is
    not the one that is slow."""
    total = 256 * MIB
    block = pattern(MIB)

    def serve(conn, r):
        r.read_request()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        for _ in range(total // MIB):
            conn.sendall(block)

    b = raw_backends(serve)
    p = proxies(config(workers, [b.address]))
    before = p.rss_peak_kb()
    c = Client(p.addr, timeout=120)
    c.send(b"GET /big HTTP/1.1\r\nHost: svc\r\n\r\n")
    start, headers = c.reader.read_head()
    assert start.startswith("HTTP/1.1 200"), start
    assert dict((k.lower(), v) for k, v in headers)["content-length"] == str(total)
    data = bytearray(c.reader.buf)
    c.reader.buf = b""
    pace = Pacer(5 * 1000 * 1000)
    pace.done(len(data))
    got = len(data)
    bad_at = None
    while got < total:
        chunk = c.sock.recv(256 * 1024)
        assert chunk, f"connection closed after {got} of {total} bytes"
        data += chunk
        got += len(chunk)
        # Check whole mebibytes as they complete, then drop them.
        while len(data) >= MIB:
            if bad_at is None and bytes(data[:MIB]) != block:
                bad_at = got - len(data)
            del data[:MIB]
        pace.done(len(chunk))
    c.close()
    assert got == total
    assert bad_at is None, f"corrupted data at offset {bad_at}"
    growth = p.rss_peak_kb() - before
    assert growth < 32 * 1024, f"peak RSS grew {growth} KiB behind a slow reader"


@pytest.mark.parametrize("workers", WORKERS)
def test_server_sent_events_for_70s(proxies, raw_backends, workers):
    """An event stream with an event every 10 s for 70 s: timeouts.idle (60 s by default) is the
    longest silence allowed, so the stream lives as long as events keep coming."""
    events = 7

    def serve(conn, r):
        r.read_request()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(events):
            time.sleep(10)
            ev = b"id: %d\ndata: tick %d\n\n" % (i, i)
            conn.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
        conn.sendall(b"0\r\n\r\n")

    b = raw_backends(serve)
    p = proxies(config(workers, [b.address]))
    c = Client(p.addr, timeout=120)
    c.send(b"GET /events HTTP/1.1\r\nHost: svc\r\nAccept: text/event-stream\r\n\r\n")
    start, headers = c.reader.read_head()
    assert start.startswith("HTTP/1.1 200"), start
    got, times = [], []
    t0 = time.monotonic()
    while True:
        size = int(c.reader.read_until(b"\r\n").split(b";")[0], 16)
        if size == 0:
            c.reader.read_until(b"\r\n")
            break
        got.append(c.reader.read_exact(size))
        c.reader.read_exact(2)
        times.append(time.monotonic() - t0)
    c.close()
    assert got == [b"id: %d\ndata: tick %d\n\n" % (i, i) for i in range(events)]
    # Each event arrived as it was sent, not buffered up to the end.
    assert times[0] < times[-1] - 50, times


@pytest.mark.parametrize("workers", WORKERS)
def test_long_poll_held_40s(proxies, raw_backends, workers):
    """A long poll the backend holds 40 s, with timeouts.response: 60s."""
    def serve(conn, r):
        r.read_request()
        time.sleep(40)
        respond(conn, 200, b'{"changes": 1}')

    b = raw_backends(serve)
    p = proxies(config(workers, [b.address], "timeouts: { response: 60s }"))
    t0 = time.monotonic()
    c = Client(p.addr, timeout=120)
    r = c.request("GET", "/poll?index=7&wait=40s")
    c.close()
    assert r.status == 200, r.body
    assert r.body == b'{"changes": 1}'
    assert time.monotonic() - t0 >= 40


@pytest.mark.parametrize("workers", WORKERS)
def test_client_stalling_mid_upload_gets_408(proxies, raw_backends, workers):
    """A client that stops sending its body gets 408 after client.body_timeout of silence; the
    backend is not blamed and the service keeps serving."""
    def serve(conn, r):
        while True:
            start, headers = r.read_head()
            if start.startswith("GET"):
                respond(conn, 200, b"fine")
                continue
            # Read what comes of the body until the proxy gives up on it.
            while conn.recv(65536):
                pass
            return

    b = raw_backends(serve)
    p = proxies(config(workers, [b.address], top_extra="client: { body_timeout: 2s }"))
    c = Client(p.addr, timeout=60)
    c.send(b"POST /upload HTTP/1.1\r\nHost: svc\r\nContent-Length: 1000000\r\n\r\n")
    c.send(b"x" * 100000)  # a tenth of the body, then silence
    t0 = time.monotonic()
    r = c.reader.read_response()
    waited = time.monotonic() - t0
    assert r.status == 408, r.body
    assert r.header("x-switchyard-error") == "request_timeout"
    assert r.json()["error"] == "request_timeout"
    assert waited >= 1.9
    assert c.closed_by_peer(30)
    c.close()
    # The instance was not blamed: still routable, and requests get through.
    for _ in range(3):
        c = Client(p.addr, timeout=60)
        assert c.request("GET", "/after").status == 200
        c.close()


@pytest.mark.parametrize("workers", WORKERS)
def test_backend_that_stops_reading_the_upload_gets_504(proxies, raw_backends, workers):
    """A backend that takes no more request bytes is timed by timeouts.idle (as nginx's
    proxy_send_timeout): 504, while a client that is slow to send is never cut by it."""
    hold = threading.Event()

    def serve(conn, r):
        r.read_head()
        hold.wait(120)  # reads nothing more: the socket buffers fill up

    b = raw_backends(serve)
    p = proxies(config(workers, [b.address], "timeouts: { idle: 1s }"))
    total = 64 * MIB
    c = Client(p.addr, timeout=60)
    c.send(b"POST /upload HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n" % total)

    # One thread both sends and reads: an ssl socket (the TLS run) must not be used by two
    # threads at once (OpenSSL's SSL objects are not thread-safe; that lost the answer once).
    c.sock.setblocking(False)
    block = b"y" * MIB
    sent, got = 0, b""
    deadline = time.monotonic() + 120
    try:
        while b"\r\n\r\n" not in got or len(got) < got.index(b"\r\n\r\n") + 4 + int(
                re.search(rb"(?i)\r\ncontent-length: *(\d+)", got).group(1)):
            assert time.monotonic() < deadline, "no answer within 120 s"
            readable, writable, _ = select.select([c.sock], [c.sock] if sent < total else [], [], 1)
            if readable or (hasattr(c.sock, "pending") and c.sock.pending()):
                try:
                    data = c.sock.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                assert data, "connection closed before the answer: %r" % got
                got += data
            elif writable:
                try:
                    sent += c.sock.send(block)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    pass
                except OSError:
                    sent = total  # the proxy closed its reading side after answering: expected
        head, body = got.split(b"\r\n\r\n", 1)
        assert head.split(b" ")[1] == b"504", got
        assert re.search(rb"(?i)\r\nx-switchyard-error: *upstream_timeout\r\n", head + b"\r\n"), head
        assert "send-timeout" in json.loads(body)["message"]
    finally:
        hold.set()
        c.close()


@pytest.mark.parametrize("workers", WORKERS)
def test_per_try_timeout_retries_only_idempotent_requests(proxies, raw_backends, workers):
    """With retry.per_try_timeout set and `timeout` in retry.on, a GET that times out on one
    instance is answered by the other; a POST is not replayed (504)."""
    release = threading.Event()
    slow_seen = []

    def slow(conn, r):
        while True:
            req = r.read_request()
            slow_seen.append(req.method)
            release.wait(120)
            respond(conn, 200, b"slow")

    def fast(conn, r):
        while True:
            r.read_request()
            respond(conn, 200, b"fast")

    s, f = raw_backends(slow), raw_backends(fast)
    p = proxies(config(workers, [s.address, f.address],
                       "retry: { attempts: 2, on: [connect-failure, reset, timeout, \"503\"], per_try_timeout: 1s }\n"
                       "outlier_detection: { consecutive_failures: 1000 }\n"
                       "circuit_breaker: { failure_threshold: 1000 }"))
    try:
        # Whichever instance round robin starts on, within a few GETs one starts on the slow
        # instance, times out after 1 s and is answered by the other.
        for _ in range(6):
            c = Client(p.addr, timeout=60)
            r = c.request("GET", "/g")
            c.close()
            assert r.status == 200 and r.body == b"fast", r.body
            if slow_seen:
                break
        assert slow_seen == ["GET"]
        # A POST that lands on the slow instance is not replayed.
        statuses = []
        for _ in range(6):
            c = Client(p.addr, timeout=60)
            statuses.append(c.request("POST", "/p", body=b"order").status)
            c.close()
            if len(slow_seen) > 1:
                break
        assert slow_seen == ["GET", "POST"]
        assert statuses[-1] == 504 and all(st == 200 for st in statuses[:-1]), statuses
    finally:
        release.set()
